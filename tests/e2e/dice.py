"""nnU-Net's foreground mean Dice of predicted against reference label files, for the end-to-end tests (the shared
folder_scores: nnU-Net's compute_metrics_on_folder; a label absent from prediction and reference is left out)."""

from __future__ import annotations

from pathlib import Path

from nnugen.evaluation.folder_scores import folder_scores, foreground_mean


def mean_foreground_dice(prediction_folder: Path, reference_folder: Path, labels: tuple[int, ...] = (1, 2)) -> float:
    scores = folder_scores(prediction_folder, reference_folder, {"background": 0, **{str(v): v for v in labels}})
    return foreground_mean({name: s["Dice"] for name, s in scores.items()})
