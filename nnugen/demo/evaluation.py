"""Dice per class of a folder of predicted label files against reference labels (what the demo prints)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def dice_per_class(prediction_folder: Path, reference_folder: Path, labels: dict[str, int],
                   file_ending: str = ".nii.gz") -> dict[str, float]:
    """Mean over cases of the Dice of each foreground label (a case without the label in either counts as 1)."""
    import SimpleITK as sitk

    scores: dict[str, list[float]] = {name: [] for name, value in labels.items() if value != 0}
    references = sorted(Path(reference_folder).glob(f"*{file_ending}"))
    if not references:
        raise ValueError(f"no reference labels ({file_ending}) in {reference_folder}")
    for reference in references:
        predicted_file = Path(prediction_folder) / reference.name
        if not predicted_file.is_file():
            raise ValueError(f"{predicted_file} is missing: the prediction did not write every case")
        predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(predicted_file)))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(reference)))
        for name in scores:
            a, b = predicted == labels[name], truth == labels[name]
            total = a.sum() + b.sum()
            scores[name].append(1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def format_table(columns: dict[str, dict[str, float]]) -> str:
    """A plain-text table: one row per class plus the mean, one column per model."""
    names = list(next(iter(columns.values())))
    width = max(len(title) for title in columns) + 3
    header = f"{'class':<12}" + "".join(f"{title:>{width}}" for title in columns)
    rows = [header, "-" * len(header)]
    for name in names:
        rows.append(f"{name:<12}" + "".join(f"{scores[name]:>{width}.3f}" for scores in columns.values()))
    rows.append(f"{'mean':<12}" + "".join(f"{np.mean(list(s.values())):>{width}.3f}" for s in columns.values()))
    return "\n".join(rows)
