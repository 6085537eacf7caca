"""Export of one predicted case: the segmentation exactly as nnU-Net exports it (its resampling back to the original
spacing, crop reversal and transpose), optional probabilities, and the uncertainty maps brought into the same
original geometry. A top-level function of picklable arguments, so ``-nps`` can run it in background workers as
nnU-Net runs its own export."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def output_files(output_truncated: Path, file_ending: str, save_probabilities: bool,
                 save_uncertainty: bool) -> list[Path]:
    """The files one case writes; ``--continue_prediction`` skips a case only when all of them read back
    (``image_writing.output_complete``)."""
    output_truncated = Path(output_truncated)
    folder, case = output_truncated.parent, output_truncated.name
    files = [folder / f"{case}{file_ending}"]
    if save_probabilities:
        files += [folder / f"{case}.npz", folder / f"{case}.pkl"]
    if save_uncertainty:
        from nnugen.inference.uncertainty import MAP_NAMES  # torch: only when there are maps

        files += [folder / f"{case}_{name}{file_ending}" for name in MAP_NAMES]
    return files


def maps_to_original_geometry(maps: np.ndarray, properties: dict, plans_manager, configuration_manager) -> np.ndarray:
    """(K, *network grid) float maps -> (K, *original image) float32, following the steps of nnU-Net's
    ``convert_predicted_logits_to_segmentation_with_correct_shape``: resample with the plan's probability resampling
    to the cropped shape, put the crop back into the full image (0 outside it), undo the transpose."""
    from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

    spacing = properties["spacing"]
    spacing_transposed = [spacing[i] for i in plans_manager.transpose_forward]
    cropped_shape = properties["shape_after_cropping_and_before_resampling"]
    current_spacing = configuration_manager.spacing if len(configuration_manager.spacing) == len(cropped_shape) \
        else [spacing_transposed[0], *configuration_manager.spacing]
    resampled = configuration_manager.resampling_fn_probabilities(maps, cropped_shape, current_spacing,
                                                                  spacing_transposed)
    resampled = np.asarray(resampled.cpu().numpy() if hasattr(resampled, "cpu") else resampled, dtype=np.float32)
    full = np.zeros((maps.shape[0], *properties["shape_before_cropping"]), dtype=np.float32)
    full = insert_crop_into_image(full, resampled, properties["bbox_used_for_cropping"])
    return full.transpose([0, *(i + 1 for i in plans_manager.transpose_backward)])


def export_case(logits: np.ndarray, maps: np.ndarray | None, properties: dict, plans_manager, configuration_manager,
                dataset_json: dict, output_truncated: str, save_probabilities: bool) -> list[str]:
    """Write CASE<ending> (+ CASE.npz / CASE.pkl, + CASE_entropy<ending> / CASE_variance<ending> when ``maps`` is
    given, (2, *network grid)) and return the paths. ``logits`` (C, *network grid) are the log of the ensemble's mean
    class probability: nnU-Net's softmax / argmax of them is the mean probability / its most likely class."""
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    from nnugen.inference.image_writing import write_float_map, write_probabilities, write_segmentation
    from nnugen.inference.uncertainty import MAP_NAMES

    file_ending = dataset_json["file_ending"]
    label_manager = plans_manager.get_label_manager(dataset_json)
    converted = convert_predicted_logits_to_segmentation_with_correct_shape(
        logits, plans_manager, configuration_manager, label_manager, properties,
        return_probabilities=save_probabilities)
    segmentation, probabilities = converted if save_probabilities else (converted, None)
    paths = output_files(Path(output_truncated), file_ending, save_probabilities, maps is not None)
    # the segmentation is written last, so a case whose segmentation exists was written completely
    if maps is not None:
        original = maps_to_original_geometry(maps, properties, plans_manager, configuration_manager)
        for name, array in zip(MAP_NAMES, original):
            write_float_map(array, Path(f"{output_truncated}_{name}{file_ending}"), properties, file_ending)
    if probabilities is not None:
        write_probabilities(probabilities, properties, Path(output_truncated))
    write_segmentation(plans_manager.image_reader_writer_class(), segmentation, paths[0], properties, file_ending)
    return [str(p) for p in paths]
