"""Dice between predicted and reference label files, for the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk


def mean_foreground_dice(prediction_folder: Path, reference_folder: Path, labels: tuple[int, ...] = (1, 2)) -> float:
    scores = []
    for reference in sorted(reference_folder.glob("*.nii.gz")):
        predicted = sitk.GetArrayFromImage(sitk.ReadImage(str(prediction_folder / reference.name)))
        truth = sitk.GetArrayFromImage(sitk.ReadImage(str(reference)))
        for label in labels:
            a, b = predicted == label, truth == label
            denominator = a.sum() + b.sum()
            scores.append(1.0 if denominator == 0 else 2.0 * np.logical_and(a, b).sum() / denominator)
    assert scores, f"no reference labels in {reference_folder}"
    return float(np.mean(scores))
