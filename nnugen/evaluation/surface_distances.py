"""Surface distances of predicted segmentations against references, per case and per label or region: the 95th
percentile Hausdorff distance (HD95, Huttenlocher et al. 1993 with the percentile of the MICCAI challenges) and the
normalised surface distance (NSD, "surface Dice" at a tolerance, Nikolov et al. 2021), both in millimetres of the
image spacing, both MONAI's (``compute_hausdorff_distance(percentile=95, spacing=...)``, ``compute_surface_dice``).

Labels, regions and the ignore label are nnU-Net's (its ``LabelManager`` and ``region_or_label_to_mask``): voxels whose
reference is the ignore label are removed from both masks before the surfaces are found. A 2D case read by nnU-Net's
reader as ``(1, y, x)`` is measured in 2D (the first axis and its dummy spacing dropped).

Empty cases (docs/evaluation.md):

- reference and prediction both empty: nnU-Net's Dice is NaN there and left out of its means; HD95 and NSD are NaN
  (MONAI gives NaN for both), written as ``null`` and left out of the means, as nnU-Net does for Dice.
- exactly one empty: MONAI gives HD95 NaN (no surface to measure to; ``get_surface_distance`` would give inf) and
  NSD 0. Written: HD95 ``null`` and left out of the HD95 mean, which counts such cases apart (``one_empty``); NSD 0,
  which enters the NSD mean (a missed or invented structure scores 0).

Each case entry names which side was empty (``"empty": "both" | "prediction" | "reference" | null``). The JSON is
standard (no NaN / Infinity): every undefined number is ``null``. numpy arrays, torch only inside MONAI."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from nnugen.evaluation.case_checks import check_image_files, check_same_geometry
from nnugen.evaluation.case_pool import map_cases

PERCENTILE = 95.0
"""Percentile of the Hausdorff distance (HD95)."""
NSD_TOLERANCE_MM = 1.0
"""Tolerance of the normalised surface distance in mm: surface points closer than this to the other surface count as
matched (Nikolov et al. 2021 choose it per organ; 1 mm is a common single choice, e.g. in nnU-Net-based challenge
reports on images of about 1 mm spacing). ``nnugen_evaluate --nsd-tolerance`` changes it."""


def surface_distances(prediction: np.ndarray, reference: np.ndarray, spacing: tuple[float, ...],
                      tolerance_mm: float = NSD_TOLERANCE_MM) -> tuple[np.ndarray, np.ndarray]:
    """(HD95, NSD) per mask, each ``(K,)``, for binary masks ``(K, *spatial)`` (2D or 3D) with the voxel ``spacing``
    in mm, one per spatial axis in array order. NaN where MONAI leaves them undefined (see the module docstring)."""
    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    prediction, reference = np.asarray(prediction, bool), np.asarray(reference, bool)
    if prediction.shape != reference.shape or prediction.ndim not in (3, 4):
        raise ValueError(f"expected two (K, *spatial) masks of one 2D or 3D shape, got {prediction.shape} and "
                         f"{reference.shape}")
    if len(spacing) != prediction.ndim - 1:
        raise ValueError(f"spacing {tuple(spacing)} needs one value per spatial axis of {prediction.shape[1:]}")
    if not tolerance_mm > 0:
        raise ValueError(f"the NSD tolerance must be > 0 mm, got {tolerance_mm}")
    if prediction.shape[0] == 0:
        return np.zeros(0), np.zeros(0)
    y_pred = torch.from_numpy(prediction[None].astype(np.float32))
    y = torch.from_numpy(reference[None].astype(np.float32))
    spacing = [float(s) for s in spacing]
    with warnings.catch_warnings():  # MONAI warns for every empty mask; the empty cases are reported in the JSON
        warnings.simplefilter("ignore")
        hd95 = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=PERCENTILE, spacing=spacing)
        nsd = compute_surface_dice(y_pred, y, class_thresholds=[tolerance_mm] * prediction.shape[0],
                                   include_background=True, spacing=spacing)
    return hd95[0].double().numpy(), nsd[0].double().numpy()


def _empty(prediction: np.ndarray, reference: np.ndarray) -> str | None:
    has_prediction, has_reference = bool(prediction.any()), bool(reference.any())
    if has_prediction and has_reference:
        return None
    return "both" if not (has_prediction or has_reference) else ("prediction" if has_reference else "reference")


def _number(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else float(value)


def case_distances(reference_file: str, prediction_file: str, reader_writer, labels_or_regions: list,
                   ignore_label: int | None = None, tolerance_mm: float = NSD_TOLERANCE_MM) -> dict:
    """One case entry of ``distances_summary.json``: files, spacing, and per label or region (nnU-Net's key)
    ``{"HD95", "NSD", "empty"}``. Checks shape, geometry and finiteness first (ValueError naming the case)."""
    from nnunetv2.evaluation.evaluate_predictions import label_or_region_to_key, region_or_label_to_mask

    name = Path(prediction_file).name
    check_image_files([reference_file], "reference")
    check_image_files([prediction_file], "prediction")
    reference, reference_properties = reader_writer.read_seg(str(reference_file))
    prediction, prediction_properties = reader_writer.read_seg(str(prediction_file))
    reference, prediction = reference[0], prediction[0]
    if prediction.shape != reference.shape:
        raise ValueError(f"{name}: prediction shape {prediction.shape} differs from the reference's "
                         f"{reference.shape}; predict on the reference's images")
    check_same_geometry(reference_properties, prediction_properties, name)
    spacing = [float(s) for s in reference_properties["spacing"]]
    if reference.ndim == 3 and reference.shape[0] == 1:  # a 2D image as nnU-Net reads it: (1, y, x)
        reference, prediction, spacing = reference[0], prediction[0], spacing[1:]
    keep = reference != ignore_label if ignore_label is not None else np.ones(reference.shape, bool)
    masks_reference = np.stack([region_or_label_to_mask(reference, r) & keep for r in labels_or_regions])
    masks_prediction = np.stack([region_or_label_to_mask(prediction, r) & keep for r in labels_or_regions])
    hd95, nsd = surface_distances(masks_prediction, masks_reference, tuple(spacing), tolerance_mm)
    metrics = {}
    for k, region in enumerate(labels_or_regions):
        metrics[label_or_region_to_key(region)] = {
            "HD95": _number(hd95[k]), "NSD": _number(nsd[k]),
            "empty": _empty(masks_prediction[k], masks_reference[k])}
    return {"reference_file": str(reference_file), "prediction_file": str(prediction_file), "spacing": spacing,
            "metrics": metrics}


def _case_distances_star(arguments: tuple) -> dict:
    return case_distances(*arguments)


def _mean(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def summarise(per_case: list[dict], tolerance_mm: float = NSD_TOLERANCE_MM) -> dict:
    """The JSON of ``distances_summary.json``: conventions, per case, mean per label or region, foreground mean
    (the mean of the per-label means, as nnU-Net's ``foreground_mean``)."""
    keys = list(per_case[0]["metrics"]) if per_case else []
    means = {}
    for key in keys:
        entries = [case["metrics"][key] for case in per_case]
        means[key] = {"HD95": _mean([e["HD95"] for e in entries]), "NSD": _mean([e["NSD"] for e in entries]),
                      "cases": len(entries), "both_empty": sum(e["empty"] == "both" for e in entries),
                      "one_empty": sum(e["empty"] in ("prediction", "reference") for e in entries)}
    return {
        "percentile": PERCENTILE,
        "nsd_tolerance_mm": tolerance_mm,
        "conventions": {
            "HD95": f"MONAI compute_hausdorff_distance(percentile={PERCENTILE:g}, spacing) in mm, symmetric",
            "NSD": f"MONAI compute_surface_dice at {tolerance_mm:g} mm (Nikolov et al. 2021)",
            "both_empty": "reference and prediction empty: HD95 and NSD null and left out of the means (nnU-Net's "
                          "Dice is NaN there)",
            "one_empty": "one of them empty: HD95 null and left out of its mean (counted in one_empty), NSD 0",
            "ignore_label": "voxels whose reference is the ignore label are removed from both masks",
        },
        "metric_per_case": per_case,
        "mean": means,
        "foreground_mean": {"HD95": _mean([m["HD95"] for m in means.values()]),
                            "NSD": _mean([m["NSD"] for m in means.values()])},
    }


def distances_on_files(pairs: list[tuple[str, str]], reader_writer, labels_or_regions: list,
                       ignore_label: int | None = None, tolerance_mm: float = NSD_TOLERANCE_MM,
                       num_processes: int = 1) -> dict:
    """``summarise`` of ``case_distances`` for each ``(reference_file, prediction_file)``; computed in
    ``num_processes`` spawned processes where the cases are big enough (case_pool.py)."""
    jobs = [(reference, prediction, reader_writer, list(labels_or_regions), ignore_label, tolerance_mm)
            for reference, prediction in pairs]
    per_case = map_cases(_case_distances_star, jobs, num_processes, [file for pair in pairs for file in pair])
    return summarise(per_case, tolerance_mm)


def distances_on_folder(reference_folder: str | Path, prediction_folder: str | Path, reader_writer, file_ending: str,
                        labels_or_regions: list, ignore_label: int | None = None,
                        tolerance_mm: float = NSD_TOLERANCE_MM, num_processes: int = 1) -> dict:
    """Every prediction ``CASE<file_ending>`` of ``prediction_folder`` against ``reference_folder/CASE<ending>``
    (nnU-Net's ``compute_metrics_on_folder`` with ``chill``: references without a prediction are skipped)."""
    predictions = sorted(p for p in Path(prediction_folder).iterdir()
                         if p.name.endswith(file_ending) and not p.name.startswith(".") and p.is_file())
    pairs = []
    for prediction in predictions:
        reference = Path(reference_folder) / prediction.name
        if not reference.is_file():
            raise ValueError(f"{prediction.name} has no reference in {reference_folder}; check the folders")
        pairs.append((str(reference), str(prediction)))
    return distances_on_files(pairs, reader_writer, labels_or_regions, ignore_label, tolerance_mm, num_processes)


def write_validation_distances(trainer) -> Path | None:
    """After nnU-Net's ``perform_actual_validation``: ``validation/distances_summary.json`` beside its
    ``summary.json``, on the same files, in nnU-Net's number of processes (rank 0 only; nothing when there is no
    validation summary)."""
    from nnunetv2.configuration import default_num_processes

    from nnugen.atomic_files import atomic_write_json

    if trainer.local_rank != 0:
        return None
    validation = Path(trainer.output_folder) / "validation"
    if not (validation / "summary.json").is_file():
        return None
    label_manager = trainer.label_manager
    regions = label_manager.foreground_regions if label_manager.has_regions else label_manager.foreground_labels
    result = distances_on_folder(Path(trainer.preprocessed_dataset_folder_base) / "gt_segmentations", validation,
                                 trainer.plans_manager.image_reader_writer_class(),
                                 trainer.dataset_json["file_ending"], regions, label_manager.ignore_label,
                                 num_processes=default_num_processes)
    path = validation / "distances_summary.json"
    atomic_write_json(path, result)
    trainer.print_to_log_file(f"HD95 / NSD ({NSD_TOLERANCE_MM:g} mm), foreground mean: "
                              f"{result['foreground_mean']['HD95']} / {result['foreground_mean']['NSD']} "
                              f"({path.name})")
    return path
