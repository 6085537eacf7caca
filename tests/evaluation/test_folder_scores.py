"""The Dice the demo, benchmarks and end-to-end tests print is nnU-Net's: 2 TP / (2 TP + FP + FN) counted by hand
here, a case without the label in prediction and reference left out of the mean (nnU-Net's NaN), NaN for a label no
case has; HD95 next to it in mm; the demo's table shows n/a for NaN and leaves it out of the mean."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from nnugen.demo.evaluation import dice_and_hd95_per_class, format_table
from nnugen.evaluation.folder_scores import folder_scores, foreground_mean

LABELS = {"background": 0, "liver": 1, "tumour": 2, "vessel": 3}


def _write(array, path):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing((0.5, 1.0, 2.0))  # the arrays' axes (z, y, x): 2.0, 1.0, 0.5 mm
    sitk.WriteImage(image, str(path))


def _hand_dice(prediction, reference, label):
    p, r = prediction == label, reference == label
    tp, fp, fn = (p & r).sum(), (p & ~r).sum(), (~p & r).sum()
    return math.nan if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


@pytest.fixture()
def folders(tmp_path):
    reference, prediction = tmp_path / "labelsTs", tmp_path / "predicted"
    reference.mkdir()
    prediction.mkdir()
    pairs = {}
    for index in range(3):
        ref = np.zeros((8, 10, 12), np.uint8)
        ref[2:6, 2:8, 3:9] = 1
        if index != 1:  # case 1: no tumour in reference or prediction (nnU-Net: NaN, left out)
            ref[3:5, 4:6, 4:7] = 2
        pred = np.roll(ref, index, axis=2)  # case k shifted by k voxels along x (0.5 mm)
        _write(ref, reference / f"case_{index}.nii.gz")
        _write(pred, prediction / f"case_{index}.nii.gz")
        pairs[index] = (pred, ref)
    _write(np.ones((8, 10, 12)), prediction / "case_0_entropy.nii.gz")  # an uncertainty image is not a case
    return reference, prediction, pairs


def test_dice_is_nnunets_with_empty_cases_left_out_and_hd95_beside_it(folders):
    reference, prediction, pairs = folders
    scores = folder_scores(prediction, reference, LABELS, distances=True)
    liver = np.mean([_hand_dice(p, r, 1) for p, r in pairs.values()])
    tumour = np.mean([_hand_dice(*pairs[k], 2) for k in (0, 2)])  # case 1 is NaN and left out
    assert scores["liver"]["Dice"] == pytest.approx(liver, abs=1e-12)
    assert scores["tumour"]["Dice"] == pytest.approx(tumour, abs=1e-12)
    assert math.isnan(scores["vessel"]["Dice"]) and math.isnan(scores["vessel"]["HD95"])
    # shifts of 0, 1 and 2 voxels along x (0.5 mm): HD95 0, 0.5 and 1.0 mm for the liver box
    assert scores["liver"]["HD95"] == pytest.approx(np.mean([0.0, 0.5, 1.0]), abs=1e-6)
    dice = {name: s["Dice"] for name, s in scores.items()}
    assert foreground_mean(dice) == pytest.approx(np.mean([liver, tumour]), abs=1e-12)
    demo, demo_hd95 = dice_and_hd95_per_class(prediction, reference, LABELS)
    assert list(demo) == ["liver", "tumour", "vessel"] and math.isnan(demo.pop("vessel"))
    assert demo == {"liver": scores["liver"]["Dice"], "tumour": scores["tumour"]["Dice"]}
    assert math.isnan(demo_hd95.pop("vessel"))
    assert demo_hd95 == {"liver": scores["liver"]["HD95"], "tumour": scores["tumour"]["HD95"]}


def test_a_missing_prediction_is_named(folders):
    reference, prediction, _ = folders
    (prediction / "case_2.nii.gz").unlink()
    with pytest.raises(ValueError, match="1 reference case\\(s\\) have no prediction .*first: case_2.nii.gz"):
        folder_scores(prediction, reference, LABELS)


def test_the_demo_table_shows_nan_as_not_available_and_leaves_it_out_of_the_mean():
    table = format_table({"model": {"liver": 0.9, "tumour": 0.5, "vessel": math.nan}})
    assert table.splitlines()[2:] == ["liver          0.900", "tumour         0.500", "vessel           n/a",
                                      "mean           0.700"]
