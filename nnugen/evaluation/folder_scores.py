"""Dice (nnU-Net's) and, on request, HD95 / NSD per label of a folder of predictions against reference labels, as
one small table: what the demo, the benchmarks and the end-to-end tests print and compare. The numbers are those of
``nnugen_evaluate`` (nnU-Net's ``compute_metrics_on_folder``, surface_distances.py), with its empty-case convention:
a case where a label is absent from prediction and reference is NaN for that label and left out of the mean over
cases (docs/evaluation.md); a label absent from every case is NaN."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnugen.evaluation.segmentation_evaluation import find_cases, nnunet_summary
from nnugen.evaluation.surface_distances import NSD_TOLERANCE_MM, distances_on_files


def folder_scores(prediction_folder: str | Path, reference_folder: str | Path, labels: dict[str, int],
                  file_ending: str = ".nii.gz", distances: bool = False, num_processes: int = 1,
                  tolerance_mm: float = NSD_TOLERANCE_MM) -> dict[str, dict[str, float]]:
    """``{label name: {"Dice": mean over cases}}`` for every foreground label of ``labels`` (dataset.json's
    ``labels``), plus ``"HD95"`` (mm) and ``"NSD"`` when ``distances``; NaN where no case defines the value. Every
    reference needs a prediction (ValueError naming the first missing)."""
    from nnunetv2.imageio.reader_writer_registry import determine_reader_writer_from_file_ending
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    cases = find_cases(Path(reference_folder), Path(prediction_folder), file_ending)
    reader_writer = determine_reader_writer_from_file_ending(file_ending, str(cases[0].reference),
                                                             allow_nonmatching_filename=True, verbose=False)()
    manager = LabelManager(labels, None)
    foreground = manager.foreground_labels
    summary = nnunet_summary(Path(reference_folder), cases, reader_writer, file_ending, manager, num_processes)
    names = {value: name for name, value in labels.items() if value in foreground}
    scores = {names[label]: {"Dice": float(summary["mean"][label]["Dice"])} for label in foreground}
    if distances:
        result = distances_on_files([(str(c.reference), str(c.prediction)) for c in cases], reader_writer,
                                    foreground, manager.ignore_label, tolerance_mm, num_processes)
        for label in foreground:
            mean = result["mean"][str(label)]
            scores[names[label]].update({key: np.nan if mean[key] is None else mean[key] for key in ("HD95", "NSD")})
    return scores


def foreground_mean(per_label: dict[str, float]) -> float:
    """The mean of per-label values (e.g. ``{name: scores["Dice"]}``), NaN left out: nnU-Net's
    ``foreground_mean``; NaN when no label has a value."""
    values = [v for v in per_label.values() if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")
