"""The intensity map of z-scored channels from the raw training images (nnugen_planner/image_statistics.py): nnU-Net
standardises each image over its non-zero box, so samples go back to original units with typical per-image
statistics, and an MR background at 0 comes back near 0."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnugen_planner.image_statistics import evenly_spaced, image_statistics, nonzero_box
from nnugen_planner.planner import PlanRequest, plan_dataset


def _write_raw(root: Path, brains: list[float]) -> tuple[Path, list[np.ndarray]]:
    """A raw dataset of 2D-in-3D images: a zero background with a bright rectangle whose height is each ``brains``
    entry (in rows of 16), so every image has its own mean and std; returns the folder and the arrays."""
    folder = root / "Dataset901_Fake"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    arrays = []
    for i, rows in enumerate(brains):
        image = np.zeros((1, 24, 20), np.float32)
        image[0, 2:2 + int(rows), 3:17] = rng.normal(700, 150, (int(rows), 14)).clip(1)
        label = (image > 0).astype(np.uint8)
        sitk.WriteImage(sitk.GetImageFromArray(image), str(folder / "imagesTr" / f"case_{i:03d}_0000.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(label), str(folder / "labelsTr" / f"case_{i:03d}.nii.gz"))
        arrays.append(image)
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1"}, "labels": {"background": 0, "brain": 1}, "numTraining": len(brains),
        "file_ending": ".nii.gz"}))
    return folder, arrays


def _by_hand(arrays: list[np.ndarray]) -> tuple[float, float, float]:
    """Median mean and std, and the lowest standardised value, over each image's non-zero box, by hand."""
    means, stds, lows = [], [], []
    for image in arrays:
        rows, columns = np.nonzero(image[0])
        box = image[0, rows.min():rows.max() + 1, columns.min():columns.max() + 1].astype(np.float64)
        means.append(box.mean())
        stds.append(box.std())
        lows.append((box.min() - box.mean()) / box.std())
    return float(np.median(means)), float(np.median(stds)), float(min(lows))


def test_statistics_are_nnunets_per_image_standardisation_over_the_nonzero_box(tmp_path):
    folder, arrays = _write_raw(tmp_path, [6, 10, 14, 18, 20])
    # one image's box is larger than its rectangle: a second, dim rectangle lower down keeps background inside it
    arrays[0][0, 20:22, 3:5] = 5.0
    sitk.WriteImage(sitk.GetImageFromArray(arrays[0]), str(folder / "imagesTr" / "case_000_0000.nii.gz"))
    [channel] = image_statistics(folder, json.loads((folder / "dataset.json").read_text()), "SimpleITKIO")
    mean, std, low = _by_hand(arrays)
    assert channel.cases == 5
    np.testing.assert_allclose([channel.mean, channel.std, channel.low], [mean, std, low], rtol=1e-5)
    assert channel.low < -1.0, "the background left inside a box is the lowest standardised value"


def test_the_box_is_nnunets_crop_to_nonzero():
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero

    rng = np.random.default_rng(1)
    data = np.zeros((2, 9, 12, 10), np.float32)
    data[0, 2:5, 3:9, 1:4] = rng.normal(5, 1, (3, 6, 3))
    data[1, 6:8, 1:2, 7:9] = 3.0  # the second channel widens the box
    data[0, 3, 5, 2] = 0.0  # a hole nnU-Net fills: the box is the same
    expected, _, _ = crop_to_nonzero(data.copy())
    np.testing.assert_array_equal(nonzero_box(data), expected)


def test_cases_are_read_evenly_spaced_over_the_sorted_names():
    names = [f"case_{i:02d}" for i in range(40)]
    assert evenly_spaced(names, 5) == ["case_00", "case_10", "case_20", "case_29", "case_39"]
    assert evenly_spaced(names[:3], 5) == names[:3]


def test_the_plan_maps_a_zero_background_back_near_zero_with_raw_images_and_not_without(fake_preprocessed, tmp_path):
    """Images with large backgrounds: with the foreground statistics of the fingerprint (mean 700 here) a background
    pixel comes back far above 0; with the raw images' per-image statistics it comes back near 0."""
    def edit(plans: dict) -> None:
        plans["foreground_intensity_properties_per_channel"] = {"0": {"mean": 700.0, "std": 150.0,
                                                                      "percentile_00_5": 330.0,
                                                                      "percentile_99_5": 1080.0}}

    fake_preprocessed("isotropic", edit=edit)
    raw, arrays = _write_raw(tmp_path / "raw", [3, 4, 5, 20, 3, 4])  # the non-zero box keeps the bottom rows
    for image in arrays:
        image[0, 22, 3:17] = 1.0  # a thin dim line at the bottom: most of each box is background
    for i, image in enumerate(arrays):
        sitk.WriteImage(sitk.GetImageFromArray(image), str(raw / "imagesTr" / f"case_{i:03d}_0000.nii.gz"))

    def background_in_original_units(raw_dataset: Path | None) -> float:
        plans = json.loads(plan_dataset(PlanRequest(dataset="901", overwrite=True, raw_dataset=raw_dataset))
                           .read_text())
        channel = plans["configurations"]["3d_fullres"]["nnugen"]["intensity"]["channels"][0]
        box = arrays[0][0, 2:23, 3:17].astype(np.float64)  # case 0's non-zero box
        z = (0.0 - box.mean()) / box.std()  # its background, as nnU-Net standardises it
        assert channel["low"] <= z < channel["high"] or raw_dataset is None
        return z * channel["std"] + channel["mean"]

    assert background_in_original_units(None) > 500
    assert abs(background_in_original_units(raw)) < 60
