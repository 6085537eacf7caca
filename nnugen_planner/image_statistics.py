"""Typical per-image intensity statistics of a raw dataset, for the intensity map of z-scored channels.

nnU-Net's ``ZScoreNormalization`` (without ``use_mask_for_norm``) standardises each image with its own mean and
standard deviation, taken over the image cropped to its non-zero box (``DefaultPreprocessor``: ``crop_to_nonzero``,
then normalisation). Mapping a generated image back to original units needs such a mean and standard deviation. The
dataset's foreground statistics of nnU-Net's fingerprint are those of the labelled voxels only: with them an MR
background at 0 comes back at about the foreground's mean, a grey (on 2D MNI152 slices: 501 instead of 0,
docs/benchmarks.md, "Without nnU-Net's augmentation"), and the planned [-1, 1] range starts far below the data.

Here up to ``MAX_CASES`` training cases (evenly spaced over the sorted case names) are read with SimpleITK, nnU-Net's
reader for the formats it plans with ``SimpleITKIO`` (other readers: None, and the foreground statistics stay), and
cropped to their non-zero box as nnU-Net's ``crop_to_nonzero`` does (the box of the voxels non-zero in any channel;
nnU-Net fills holes in that mask, which leaves its box unchanged; nnunetv2 itself pulls in torch, which the planner
does not import). Per channel the result holds the medians of the cases' means and standard deviations, and the
extremes of their standardised intensities (the lowest value, the background of MR, and the highest 99.5th
percentile), which become the ends of the [-1, 1] range."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_CASES = 16
READERS = ("SimpleITKIO",)


@dataclass(frozen=True)
class ImageStatistics:
    """One channel: median per-image ``mean`` and ``std`` (original units), and the lowest and highest standardised
    intensity seen (``low``: the minimum; ``high``: the 99.5th percentile), over ``cases`` cases."""

    mean: float
    std: float
    low: float
    high: float
    cases: int


def evenly_spaced(names: list[str], count: int) -> list[str]:
    """``count`` of the sorted ``names``, evenly spaced from the first to the last (all of them if fewer)."""
    names = sorted(names)
    if len(names) <= count:
        return names
    return [names[round(i * (len(names) - 1) / (count - 1))] for i in range(count)]


def training_images(raw_dataset: Path, dataset_json: dict) -> dict[str, list[Path]]:
    """Case -> its channel files, from dataset.json's ``dataset`` entry or imagesTr (CASE_XXXX + file ending)."""
    if "dataset" in dataset_json:
        return {case: [raw_dataset / f for f in entry["images"]] for case, entry in dataset_json["dataset"].items()}
    ending = dataset_json["file_ending"]
    cases: dict[str, list[Path]] = {}
    for path in sorted((raw_dataset / "imagesTr").glob(f"*_[0-9][0-9][0-9][0-9]{ending}")):
        cases.setdefault(path.name[:-len(ending) - 5], []).append(path)
    return cases


def nonzero_box(data: np.ndarray) -> np.ndarray:
    """``data`` (C, *spatial) cropped to the box of the voxels that are non-zero in any channel (all of it if none)."""
    mask = (data != 0).any(0)
    if not mask.any():
        return data
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(mask))
    return data[(slice(None), *box)]


def image_statistics(raw_dataset: Path, dataset_json: dict, reader_name: str,
                     max_cases: int = MAX_CASES) -> list[ImageStatistics] | None:
    """Per channel, the statistics of up to ``max_cases`` training images of ``raw_dataset`` (module docstring);
    None for a reader other than SimpleITK's or a dataset without training images."""
    import SimpleITK as sitk

    files = training_images(raw_dataset, dataset_json)
    if reader_name not in READERS or not files:
        return None
    per_case = []
    for case in evenly_spaced(list(files), max_cases):
        data = np.stack([sitk.GetArrayFromImage(sitk.ReadImage(str(f))).astype(np.float64) for f in files[case]])
        flat = nonzero_box(data).reshape(data.shape[0], -1)
        mean, std = flat.mean(1), np.maximum(flat.std(1), 1e-8)
        standardised = (flat - mean[:, None]) / std[:, None]
        per_case.append((mean, std, standardised.min(1), np.percentile(standardised, 99.5, axis=1)))
    means, stds, lows, highs = (np.stack(values) for values in zip(*per_case))
    return [ImageStatistics(mean=float(np.median(means[:, c])), std=float(np.median(stds[:, c])),
                            low=float(lows[:, c].min()), high=float(highs[:, c].max()), cases=len(per_case))
            for c in range(means.shape[1])]
