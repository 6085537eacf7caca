"""A folder of predicted segmentations against a folder of references (nnU-Net raw ``labelsTr`` layout): nnU-Net's own
``compute_metrics_on_folder`` (its ``summary.json``, unchanged), plus how well whatever uncertainty lies beside the
predictions finds the wrong voxels, and how calibrated the probabilities are (``error_detection.py``).

What counts as uncertainty, per case ``CASE`` of the prediction folder:

- ``CASE_entropy<ending>`` / ``CASE_variance<ending>``: the maps ``nnugen_predict --save-uncertainty`` writes (float
  images in the reference's geometry);
- ``CASE.npz`` (``--save_probabilities`` of ``nnUNetv2_predict`` or ``nnugen_predict``): key ``probabilities``
  ``(C, *spatial)``, already exported to the original image's grid and axis order, i.e. the axes of the array nnU-Net's
  reader returns for the segmentation (SimpleITK: ``(z, y, x)``). Its softmax entropy is the score ``entropy`` when no
  entropy image is there, and the expected calibration error is computed from it. A key ``variance`` (``(*spatial)``,
  e.g. the variance over mirrored test-time predictions) is the score ``variance`` when no variance image is there.
  Region-based datasets store per-region sigmoid outputs, not a distribution over labels: no entropy or ECE from them.

Beside nnU-Net's ``summary.json`` go ``distances_summary.json`` (HD95 and NSD per case and label, surface_distances.py)
and ``uncertainty_summary.json``; a short table is printed. Every case is read and checked (shape, spacing, origin,
direction, NaN) and every number computed before anything is written."""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnugen.atomic_files import atomic_path, atomic_write_json
from nnugen.evaluation.case_checks import check_image_files
from nnugen.evaluation.case_pool import map_cases
from nnugen.evaluation.error_detection import (
    NUM_BINS,
    POOLED_VOXELS,
    CalibrationBins,
    CaseSample,
    PooledSample,
    calibration_bins,
    case_sample,
    error_detection,
    error_mask,
    evaluated_voxels,
    predictive_entropy,
)
from nnugen.evaluation.surface_distances import NSD_TOLERANCE_MM, distances_on_files

MAP_NAMES = ("entropy", "variance")
"""Uncertainty images ``CASE_<name><ending>`` (the names nnugen.inference.uncertainty.MAP_NAMES writes)."""
SCORE_SOURCES = {"entropy": ("CASE_entropy image", "softmax entropy of CASE.npz"),
                 "variance": ("CASE_variance image", "variance key of CASE.npz")}


@dataclass(frozen=True)
class EvaluationCase:
    """One case: its reference and predicted segmentation, uncertainty images found and probabilities file if any."""

    name: str
    reference: Path
    prediction: Path
    maps: dict[str, Path]
    probabilities: Path | None


def find_cases(reference_folder: Path, prediction_folder: Path, file_ending: str,
               chill: bool = False) -> list[EvaluationCase]:
    """Cases of ``prediction_folder`` with a reference of the same name; every reference must have a prediction unless
    ``chill`` (nnU-Net's flag). Uncertainty images of a case are not cases themselves."""
    for folder, what in ((reference_folder, "reference"), (prediction_folder, "prediction")):
        if not folder.is_dir():
            raise ValueError(f"{what} folder {folder} does not exist; pass an existing folder")
    def names(folder: Path) -> list[str]:  # hidden files (e.g. atomic writes' temporaries) are never cases
        return [p.name[: -len(file_ending)] for p in folder.iterdir()
                if p.name.endswith(file_ending) and not p.name.startswith(".") and p.is_file()]

    references, predicted = sorted(names(reference_folder)), set(names(prediction_folder))
    cases = [case for case in references if case in predicted]
    if not cases:
        raise ValueError(f"no case of {prediction_folder} has a reference {reference_folder}/CASE{file_ending}; check "
                         f"the folders and the file ending ({file_ending})")
    missing = [case for case in references if case not in predicted]
    if missing and not chill:
        raise ValueError(f"{len(missing)} reference case(s) have no prediction in {prediction_folder} (first: "
                         f"{missing[0]}{file_ending}); predict them or pass --chill")
    found = []
    for case in cases:
        maps = {name: prediction_folder / f"{case}_{name}{file_ending}" for name in MAP_NAMES}
        npz = prediction_folder / f"{case}.npz"
        found.append(EvaluationCase(case, reference_folder / f"{case}{file_ending}",
                                    prediction_folder / f"{case}{file_ending}",
                                    {name: path for name, path in maps.items() if path.is_file()},
                                    npz if npz.is_file() else None))
    return found


def _case_scores(case: EvaluationCase, reader_writer, shape: tuple[int, ...],
                 use_probabilities: bool) -> tuple[dict[str, np.ndarray], dict[str, str], np.ndarray | None]:
    """Scores ``(*spatial)`` by name, their sources, and the probabilities ``(C, *spatial)`` (None if not used)."""
    scores, sources = {}, {}
    for name, path in case.maps.items():
        check_image_files([path], "uncertainty image")
        image = reader_writer.read_images([str(path)])[0]
        if image.shape[0] != 1 or image.shape[1:] != shape:
            raise ValueError(f"{path.name} has shape {image.shape[1:]} ({image.shape[0]} channel(s)), the reference "
                             f"{shape}; write the uncertainty on the reference's grid")
        scores[name], sources[name] = image[0], SCORE_SOURCES[name][0]
    probabilities = None
    if case.probabilities is not None and use_probabilities:
        with np.load(case.probabilities) as npz:
            if "probabilities" not in npz:
                raise ValueError(f"{case.probabilities.name} has no key 'probabilities'; write it as nnU-Net's "
                                 "--save_probabilities does")
            probabilities = npz["probabilities"]
            variance = npz["variance"] if "variance" in npz else None
        if probabilities.shape[1:] != shape:
            raise ValueError(f"{case.probabilities.name} holds probabilities of shape {probabilities.shape}, the "
                             f"reference {shape}: expected (C, {', '.join(map(str, shape))})")
        if "entropy" not in scores:
            scores["entropy"], sources["entropy"] = predictive_entropy(probabilities), SCORE_SOURCES["entropy"][1]
        if variance is not None and "variance" not in scores:
            if variance.shape != shape:
                raise ValueError(f"{case.probabilities.name}: 'variance' has shape {variance.shape}, the reference "
                                 f"{shape}")
            scores["variance"], sources["variance"] = variance, SCORE_SOURCES["variance"][1]
    return scores, sources, probabilities


def evaluate_case(case: EvaluationCase, index: int, reader_writer, ignore_label: int | None, use_probabilities: bool,
                  capacity: int = POOLED_VOXELS, seed: int = 0
                  ) -> tuple[dict, CalibrationBins | None, dict[str, CaseSample]]:
    """Per-case JSON entry, its calibration bins (None without probabilities) and its pooled-voxel sample per score."""
    reference = reader_writer.read_seg(str(case.reference))[0][0]
    prediction = reader_writer.read_seg(str(case.prediction))[0][0]
    if prediction.shape != reference.shape:
        raise ValueError(f"{case.prediction.name}: prediction shape {prediction.shape} differs from the reference's "
                         f"{reference.shape}; predict on the reference's images")
    evaluated = evaluated_voxels(reference, ignore_label)
    errors = error_mask(prediction, reference)[evaluated]
    scores, sources, probabilities = _case_scores(case, reader_writer, reference.shape, use_probabilities)
    entry = {"case": case.name, "reference_file": str(case.reference), "prediction_file": str(case.prediction),
             "voxels": int(errors.size), "errors": int(errors.sum()), "scores": {}}
    scores = {name: score[evaluated] for name, score in scores.items()}
    for name, score in scores.items():
        entry["scores"][name] = {**error_detection(score, errors).as_json(), "source": sources[name]}
    bins = None
    if probabilities is not None:
        bins = calibration_bins(probabilities, reference, evaluated)
        ece = bins.expected_calibration_error()
        entry["ece"] = None if math.isnan(ece) else ece
    samples = {name: case_sample(index, errors, {name: score}, capacity, seed)
               for name, score in scores.items()}
    return entry, bins, samples


def _evaluate_case_star(arguments: tuple) -> tuple:
    return evaluate_case(*arguments)


def _nanmean(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def evaluate_uncertainty(cases: list[EvaluationCase], reader_writer, ignore_label: int | None = None,
                         use_probabilities: bool = True, num_processes: int = 1, capacity: int = POOLED_VOXELS,
                         seed: int = 0) -> dict:
    """The error-detection and calibration block over ``cases``: per case, mean over cases, pooled (JSON-ready)."""
    jobs = [(case, index, reader_writer, ignore_label, use_probabilities, capacity, seed)
            for index, case in enumerate(cases)]
    files = [file for case in cases for file in (case.reference, case.prediction, *case.maps.values(),
                                                 *([case.probabilities] if case.probabilities else []))]
    results = map_cases(_evaluate_case_star, jobs, num_processes, files)
    per_case = [entry for entry, _, _ in results]
    pools: dict[str, PooledSample] = {}
    bins_total = None
    for _, bins, samples in results:
        for name, sample in samples.items():
            pools.setdefault(name, PooledSample(capacity)).add(sample)
        if bins is not None:
            bins_total = bins if bins_total is None else bins_total + bins
    pooled, means = {}, {}
    for name in (n for n in MAP_NAMES if n in pools):
        entries = [entry["scores"][name] for entry in per_case if name in entry["scores"]]
        pooled[name] = {**pools[name].detection(name).as_json(), "cases": len(entries),
                        "subsampled": pools[name].subsampled, "voxels_before_sampling": pools[name].voxels,
                        "sources": sorted({e["source"] for e in entries})}
        means[name] = {"auroc": _nanmean([e["auroc"] for e in entries]),
                       "auprc": _nanmean([e["auprc"] for e in entries]), "cases": len(entries),
                       "cases_defined": sum(e["auroc"] is not None for e in entries)}
    if bins_total is not None:
        eces = [entry["ece"] for entry in per_case if "ece" in entry]
        ece = bins_total.expected_calibration_error()
        pooled["ece"] = {"value": None if math.isnan(ece) else ece, "voxels": int(bins_total.count.sum()),
                         "cases": len(eces)}
        means["ece"] = {"value": _nanmean(eces), "cases": len(eces), "cases_defined": sum(e is not None for e in eces)}
    return {
        "conventions": {
            "errors": "voxels with prediction != reference, reference ignore label excluded (as nnU-Net does)",
            "auroc_auprc": "scikit-learn roc_auc_score / average_precision_score of the uncertainty for the wrong "
                           "voxels; null when a case has no wrong voxel or only wrong ones",
            "ece": f"top-label expected calibration error of the mean probability, {NUM_BINS} equal-width bins "
                   "(Guo et al. 2017), every evaluated voxel one sample",
            "pooled": f"all evaluated voxels of all cases concatenated; above {capacity} voxels a uniform sample of "
                      f"{capacity} drawn with seed {seed} (ECE pools its bins exactly)",
        },
        "pooled": pooled,
        "mean_over_cases": means,
        "per_case": per_case,
    }


def nnunet_summary(reference_folder: Path, cases: list[EvaluationCase], reader_writer, file_ending: str,
                    label_manager, num_processes: int) -> dict:
    """nnU-Net's ``compute_metrics_on_folder`` on exactly the cases' segmentations (its folder scan would take the
    uncertainty images for cases): a folder of links, then the real paths put back into its result."""
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder

    labels = label_manager.foreground_regions if label_manager.has_regions else label_manager.foreground_labels
    with tempfile.TemporaryDirectory(prefix="nnugen_evaluate_") as links:
        for case in cases:
            os.symlink(case.prediction.resolve(), Path(links) / case.prediction.name)
        result = compute_metrics_on_folder(str(reference_folder), links, None, reader_writer, file_ending, labels,
                                           label_manager.ignore_label, max(1, num_processes), chill=True)
    real = {case.prediction.name: str(case.prediction) for case in cases}
    for entry in result["metric_per_case"]:
        entry["prediction_file"] = real[Path(entry["prediction_file"]).name]
    return result


@dataclass(frozen=True)
class FolderEvaluation:
    """The results: nnU-Net's summary (as ``compute_metrics_on_folder`` returns it), the surface distances
    (``surface_distances.summarise``) and the uncertainty block."""

    nnunet_summary: dict
    uncertainty: dict
    distances: dict


def evaluate_segmentation_folder(reference_folder: str | os.PathLike, prediction_folder: str | os.PathLike,
                                 dataset_json: dict, file_ending: str | None = None, plans_file: str | None = None,
                                 num_processes: int = 1, chill: bool = False, capacity: int = POOLED_VOXELS,
                                 seed: int = 0, nsd_tolerance_mm: float = NSD_TOLERANCE_MM) -> FolderEvaluation:
    """Evaluate a folder; reads everything and checks every shape before returning, writes nothing."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_dataset_json
    from nnunetv2.utilities.label_handling.label_handling import LabelManager
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    reference_folder, prediction_folder = Path(reference_folder), Path(prediction_folder)
    file_ending = file_ending or dataset_json.get("file_ending")
    if not file_ending or "labels" not in dataset_json:
        raise ValueError("dataset.json needs 'labels' and 'file_ending' (or pass -fe); pass the dataset's "
                         "dataset.json with -djfile")
    cases = find_cases(reference_folder, prediction_folder, file_ending, chill)
    reader_writer = determine_reader_writer_from_dataset_json({**dataset_json, "file_ending": file_ending},
                                                              str(cases[0].reference), verbose=False)()
    label_manager = (PlansManager(plans_file).get_label_manager(dataset_json) if plans_file else
                     LabelManager(dataset_json["labels"], dataset_json.get("regions_class_order")))
    labels = label_manager.foreground_regions if label_manager.has_regions else label_manager.foreground_labels
    # first: it checks shape, geometry and NaN of every case, with the case's name in the error
    distances = distances_on_files([(str(case.reference), str(case.prediction)) for case in cases], reader_writer,
                                   labels, label_manager.ignore_label, nsd_tolerance_mm, num_processes)
    uncertainty = evaluate_uncertainty(cases, reader_writer, label_manager.ignore_label,
                                       use_probabilities=not label_manager.has_regions,
                                       num_processes=num_processes, capacity=capacity, seed=seed)
    if label_manager.has_regions and any(case.probabilities for case in cases):
        uncertainty["conventions"]["probabilities"] = ("region-based dataset: CASE.npz holds per-region sigmoid "
                                                       "outputs, so no entropy or ECE is computed from it")
    summary = nnunet_summary(reference_folder, cases, reader_writer, file_ending, label_manager, num_processes)
    uncertainty = {"reference_folder": str(reference_folder), "prediction_folder": str(prediction_folder),
                   "file_ending": file_ending, "ignore_label": label_manager.ignore_label, "cases": len(cases),
                   **uncertainty}
    distances = {"reference_folder": str(reference_folder), "prediction_folder": str(prediction_folder), **distances}
    return FolderEvaluation(summary, uncertainty, distances)


def write_folder_evaluation(evaluation: FolderEvaluation, summary_file: Path, uncertainty_file: Path,
                            distances_file: Path) -> None:
    """nnU-Net's ``summary.json`` through its own ``save_summary_json``, the distances and the uncertainty JSON, each
    atomically."""
    from nnunetv2.evaluation.evaluate_predictions import save_summary_json

    for path in (summary_file, uncertainty_file, distances_file):
        path.parent.mkdir(parents=True, exist_ok=True)
    def whole(temporary: Path) -> None:
        json.loads(temporary.read_text(encoding="utf-8"))  # nnU-Net's file may hold NaN, which json reads

    with atomic_path(summary_file, suffix=".json", check=whole) as temporary:
        save_summary_json(evaluation.nnunet_summary, str(temporary))
    atomic_write_json(distances_file, evaluation.distances)
    atomic_write_json(uncertainty_file, evaluation.uncertainty)


def summary_table(evaluation: FolderEvaluation) -> str:
    """A few lines: per label or region nnU-Net's mean Dice, HD95 and NSD, then AUROC / AUPRC per score (pooled and
    mean over cases) and the ECE."""

    def number(value: float | None) -> str:
        return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"

    uncertainty, distances = evaluation.uncertainty, evaluation.distances
    tolerance = f"NSD {distances['nsd_tolerance_mm']:g} mm"
    lines = [f"{uncertainty['cases']} case(s)",
             f"{'label/region':<14} {'Dice (nnU-Net)':>14} {'HD95 mm':>10} {tolerance:>12}"]
    dice_means = {str(key): value for key, value in evaluation.nnunet_summary["mean"].items()}
    rows = [(key, dice_means[key].get("Dice"), mean) for key, mean in distances["mean"].items()]
    rows.append(("foreground", evaluation.nnunet_summary["foreground_mean"].get("Dice"), distances["foreground_mean"]))
    for key, dice, mean in rows:
        lines.append(f"{key:<14} {number(dice):>14} {number(mean['HD95']):>10} {number(mean['NSD']):>12}")
    pooled, means = uncertainty["pooled"], uncertainty["mean_over_cases"]
    scores = [name for name in MAP_NAMES if name in pooled]
    if not scores and "ece" not in pooled:
        return "\n".join(lines + ["no uncertainty images or probabilities found beside the predictions"])
    if scores:
        lines.append(f"{'score':<9} {'AUROC pooled':>12} {'AUPRC pooled':>12} {'AUROC mean':>10} {'AUPRC mean':>10}  "
                     "cases  source")
    for name in scores:
        p, m = pooled[name], means[name]
        lines.append(f"{name:<9} {number(p['auroc']):>12} {number(p['auprc']):>12} {number(m['auroc']):>10} "
                     f"{number(m['auprc']):>10}  {m['cases_defined']}/{m['cases']:<3}  {', '.join(p['sources'])}")
    if "ece" in pooled:
        lines.append(f"ECE ({NUM_BINS} bins): pooled {number(pooled['ece']['value'])}, mean over cases "
                     f"{number(means['ece']['value'])} ({means['ece']['cases']} case(s))")
    return "\n".join(lines)
