"""Export of one anomaly case: the maps and the counterfactual in the case's original geometry (nnU-Net's export
steps: resample to the cropped shape, put the crop back, undo the transpose; see ``maps_to_original_geometry``), then
the lesion segmentation exactly as ``nnUNetv2_predict`` writes it. A top-level function of picklable arguments, so
``-nps`` can run it in background workers.

The counterfactual is written in the input image's intensity units. nnU-Net's normalisations are linear per case
(z-scoring with the case's own mean and std; CT standardisation inside its clip range), so the map back is
``a * normalised + b`` per channel; a and b are fitted by least squares between the input image and its own
normalised version brought back the same way, on the voxels inside nnU-Net's crop (voxels at the clip range and
voxels at exactly 0, which nnU-Net's nonzero mask sets, left out). Exact when nnU-Net did not resample the case;
otherwise the interpolation of the two round trips makes it close, not exact. Outside the crop the input is copied.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnugen.inference.case_export import export_case, maps_to_original_geometry, output_files

ANOMALY_MAP, VARIANCE_MAP, COUNTERFACTUAL = "anomaly", "anomaly_variance", "counterfactual"


def anomaly_output_files(output_truncated: Path, file_ending: str, save_probabilities: bool, image_channels: int,
                         with_variance: bool) -> list[Path]:
    """The files one case writes, the segmentation first (``--continue_prediction`` needs all of them).
    One counterfactual file for one channel, ``CASE_counterfactual_XXXX`` per channel for several."""
    output_truncated = Path(output_truncated)
    folder, case = output_truncated.parent, output_truncated.name
    names = [ANOMALY_MAP] + ([VARIANCE_MAP] if with_variance else [])
    names += [COUNTERFACTUAL] if image_channels == 1 else [f"{COUNTERFACTUAL}_{c:04d}" for c in range(image_channels)]
    files = output_files(output_truncated, file_ending, save_probabilities, save_uncertainty=False)
    return files + [folder / f"{case}_{name}{file_ending}" for name in names]


def linear_fit(source: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising sum (a * source + b - target)^2; a = 0, b = mean(target) for a constant source."""
    source, target = source.astype(np.float64).ravel(), target.astype(np.float64).ravel()
    if source.size == 0:
        return 1.0, 0.0
    centred = source - source.mean()
    variance = float(centred @ centred)
    slope = float(centred @ (target - target.mean())) / variance if variance > 0 else 0.0
    return slope, float(target.mean() - slope * source.mean())


def to_input_units(counterfactual: np.ndarray, normalised: np.ndarray, image: np.ndarray,
                   inside: np.ndarray) -> np.ndarray:
    """Counterfactual (C, *original) in normalised intensities -> the input image's units, per channel.

    ``normalised``: nnU-Net's normalised input brought back to the original geometry like the counterfactual;
    ``image``: the input as read (C, *original); ``inside``: nnU-Net's crop (*original) bool.
    """
    result = image.astype(np.float32, copy=True)
    for c in range(image.shape[0]):
        values = normalised[c][inside]
        if values.size == 0:
            continue
        usable = (values != 0) & (values > values.min()) & (values < values.max())
        a, b = linear_fit(values[usable], image[c][inside][usable])
        result[c][inside] = a * counterfactual[c][inside] + b
    return result


def export_anomaly_case(logits: np.ndarray, maps: np.ndarray, counterfactual: np.ndarray, normalised: np.ndarray,
                        input_files: list[str], properties: dict, plans_manager, configuration_manager,
                        dataset_json: dict, output_truncated: str, save_probabilities: bool) -> list[str]:
    """Write CASE_anomaly (+ CASE_anomaly_variance), CASE_counterfactual and then CASE<ending>; return the paths.

    ``maps`` (1 or 2, *network grid), ``counterfactual`` and ``normalised`` (the preprocessed input) (C, *network
    grid); ``input_files``: the case's images, one per channel.
    """
    from nnugen.inference.image_writing import write_float_map

    file_ending = dataset_json["file_ending"]
    channels = counterfactual.shape[0]
    paths = anomaly_output_files(Path(output_truncated), file_ending, save_probabilities, channels, len(maps) == 2)
    crop = np.ones((1, *maps.shape[1:]), np.float32)
    original = maps_to_original_geometry(np.concatenate([maps, counterfactual, normalised, crop]).astype(np.float32),
                                         properties, plans_manager, configuration_manager)
    image, _ = plans_manager.image_reader_writer_class().read_images(input_files)
    healthy = to_input_units(original[len(maps):len(maps) + channels], original[len(maps) + channels:-1], image,
                             original[-1] > 0.5)
    extra = paths[-(len(maps) + channels):]
    for array, path in zip([*original[:len(maps)], *healthy], extra):
        write_float_map(array, path, properties, file_ending)
    # export_case writes the segmentation last, so a case whose segmentation exists was written completely
    return [*export_case(logits, None, properties, plans_manager, configuration_manager, dataset_json,
                         output_truncated, save_probabilities), *map(str, extra)]
