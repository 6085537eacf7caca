"""Dice and HD95 per class of a folder of predicted label files against reference labels (what the demo prints):
nnU-Net's Dice and MONAI's HD95 through the shared folder_scores (evaluation/folder_scores.py, docs/evaluation.md for
the empty-case rule)."""

from __future__ import annotations

import math
from pathlib import Path

from nnugen.evaluation.folder_scores import folder_scores, foreground_mean


def dice_and_hd95_per_class(prediction_folder: Path, reference_folder: Path, labels: dict[str, int],
                            file_ending: str = ".nii.gz") -> tuple[dict[str, float], dict[str, float]]:
    """nnU-Net's Dice and the HD95 in mm (MONAI, with the spacing) of each foreground label, each the mean over the
    cases where it is defined (docs/evaluation.md)."""
    scores = folder_scores(prediction_folder, reference_folder, labels, file_ending, distances=True)
    return ({name: values["Dice"] for name, values in scores.items()},
            {name: values["HD95"] for name, values in scores.items()})


def format_table(columns: dict[str, dict[str, float]]) -> str:
    """A plain-text table: one row per class plus the mean (NaN left out, as nnU-Net's foreground mean), one column
    per model; n/a where undefined."""
    names = list(next(iter(columns.values())))
    width = max(len(title) for title in columns) + 3

    def cell(value: float) -> str:
        return f"{'n/a':>{width}}" if math.isnan(value) else f"{value:>{width}.3f}"

    header = f"{'class':<12}" + "".join(f"{title:>{width}}" for title in columns)
    rows = [header, "-" * len(header)]
    for name in names:
        rows.append(f"{name:<12}" + "".join(cell(scores[name]) for scores in columns.values()))
    rows.append(f"{'mean':<12}" + "".join(cell(foreground_mean(s)) for s in columns.values()))
    return "\n".join(rows)
