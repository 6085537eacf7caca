"""HD95 and NSD with the image spacing, on arrays whose answer is known by hand: a one-voxel plate shifted by k voxels
along an axis of spacing s is k * s away everywhere (HD95 = k * s; NSD 1 within the tolerance, 0 beyond); one stray
voxel among 100 surface voxels moves the maximum but not the 95th percentile. Empty cases follow the documented
convention; files go through nnU-Net's reader with regions and the ignore label."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from nnugen.evaluation.surface_distances import case_distances, summarise, surface_distances


def _plate(shape, axis, index):
    mask = np.zeros(shape, bool)
    where = [slice(1, n - 1) for n in shape]
    where[axis] = index
    mask[tuple(where)] = True
    return mask


@pytest.mark.parametrize("shape, spacing", [((12, 14, 16), (2.5, 0.7, 1.3)), ((14, 16), (0.6, 3.0))])
@pytest.mark.parametrize("shift", [1, 3])
def test_shifted_plate_is_k_times_spacing_away(shape, spacing, shift):
    for axis in range(len(shape)):
        reference, prediction = _plate(shape, axis, 4), _plate(shape, axis, 4 + shift)
        expected = shift * spacing[axis]
        hd95, nsd = surface_distances(prediction[None], reference[None], spacing, tolerance_mm=expected + 1e-3)
        assert hd95[0] == pytest.approx(expected, rel=1e-6)
        assert nsd[0] == 1.0
        _, nsd = surface_distances(prediction[None], reference[None], spacing, tolerance_mm=expected - 1e-3)
        assert nsd[0] == 0.0


def test_one_stray_voxel_moves_the_maximum_not_the_95th_percentile():
    reference = _plate((12, 12, 12), 0, 3)  # 10 x 10 = 100 surface voxels
    prediction = reference.copy()
    prediction[9, 5, 5] = True  # 6 voxels of 2 mm from the plate: 12 mm
    hd95, nsd = surface_distances(prediction[None], reference[None], (2.0, 1.0, 1.0), tolerance_mm=1.0)
    # prediction -> reference: 100 zeros and 12 mm, whose 95th percentile is 0; reference -> prediction: 100 zeros
    assert hd95[0] == 0.0
    assert nsd[0] == pytest.approx(200 / 201)  # all but the stray voxel lie within 1 mm


def test_empty_cases_follow_the_convention():
    empty, plate = np.zeros((8, 8, 8), bool), _plate((8, 8, 8), 0, 3)
    hd95, nsd = surface_distances(np.stack([empty, empty, plate]), np.stack([empty, plate, empty]), (1.0, 1.0, 1.0))
    assert math.isnan(hd95[0]) and math.isnan(nsd[0])  # both empty: undefined, as nnU-Net's Dice
    assert math.isnan(hd95[1]) and nsd[1] == 0.0  # prediction empty
    assert math.isnan(hd95[2]) and nsd[2] == 0.0  # reference empty


def test_bad_arguments_say_what_to_do():
    plate = _plate((8, 8, 8), 0, 3)[None]
    with pytest.raises(ValueError, match="one value per spatial axis"):
        surface_distances(plate, plate, (1.0, 1.0))
    with pytest.raises(ValueError, match="must be > 0 mm"):
        surface_distances(plate, plate, (1.0, 1.0, 1.0), tolerance_mm=0)


def _write(array, path, spacing=(0.5, 1.0, 2.0), origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)  # (x, y, z): the array's axes (z, y, x) have spacing (2.0, 1.0, 0.5)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))


def test_case_files_with_regions_ignore_label_and_the_json(tmp_path):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    reference = np.zeros((10, 10, 10), np.uint8)
    reference[2:8, 2:8, 2:8] = 1
    reference[4:6, 4:6, 4:6] = 2
    prediction = np.roll(reference, 2, axis=2)  # 2 voxels along x, spacing 0.5 mm: 1 mm
    prediction[prediction == 2] = 1  # label 2 missed: only region (1, 2) and label 1 exist in the prediction
    _write(reference, tmp_path / "ref.nii.gz")
    _write(prediction, tmp_path / "pred.nii.gz")
    entry = case_distances(str(tmp_path / "ref.nii.gz"), str(tmp_path / "pred.nii.gz"), SimpleITKIO(),
                           [(1, 2), 2, 3], tolerance_mm=1.0)
    assert entry["spacing"] == [2.0, 1.0, 0.5]
    whole = entry["metrics"]["(1, 2)"]
    assert whole == {"HD95": pytest.approx(1.0), "NSD": 1.0, "empty": None}
    assert entry["metrics"]["2"] == {"HD95": None, "NSD": 0.0, "empty": "prediction"}
    assert entry["metrics"]["3"] == {"HD95": None, "NSD": None, "empty": "both"}
    result = summarise([entry, entry])
    assert result["mean"]["2"] == {"HD95": None, "NSD": 0.0, "cases": 2, "both_empty": 0, "one_empty": 2}
    assert result["mean"]["3"]["NSD"] is None and result["mean"]["3"]["both_empty"] == 2
    assert result["foreground_mean"] == {"HD95": pytest.approx(1.0), "NSD": 0.5}  # labels 3 (all null) left out

    # the ignore label's voxels leave both masks: a prediction differing only there is perfect
    reference[:, :, 0] = 4
    prediction = reference.copy()
    prediction[:, :, 0] = 1
    _write(reference, tmp_path / "ref.nii.gz")
    _write(prediction, tmp_path / "pred.nii.gz")
    entry = case_distances(str(tmp_path / "ref.nii.gz"), str(tmp_path / "pred.nii.gz"), SimpleITKIO(), [1],
                           ignore_label=4)
    assert entry["metrics"]["1"] == {"HD95": 0.0, "NSD": 1.0, "empty": None}


@pytest.mark.parametrize("breakage, message", [
    ("spacing", "pred.nii.gz: the prediction's spacing .* differs from the reference's"),
    ("origin", "pred.nii.gz: the prediction's origin"),
    ("shape", "pred.nii.gz: prediction shape"),
])
def test_geometry_that_differs_names_the_case(tmp_path, breakage, message):
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    reference = np.zeros((6, 6, 6), np.uint8)
    reference[2:4, 2:4, 2:4] = 1
    _write(reference, tmp_path / "ref.nii.gz")
    if breakage == "spacing":
        _write(reference, tmp_path / "pred.nii.gz", spacing=(0.5, 1.0, 2.5))
    elif breakage == "origin":
        _write(reference, tmp_path / "pred.nii.gz", origin=(0.0, 3.0, 0.0))
    else:
        _write(reference[:5], tmp_path / "pred.nii.gz")
    with pytest.raises(ValueError, match=message):
        case_distances(str(tmp_path / "ref.nii.gz"), str(tmp_path / "pred.nii.gz"), SimpleITKIO(), [1])


class _Trainer:
    """What write_validation_distances reads of an nnU-Net trainer after its perform_actual_validation."""

    def __init__(self, root, rank=0):
        from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
        from nnunetv2.utilities.label_handling.label_handling import LabelManager

        self.output_folder, self.preprocessed_dataset_folder_base = str(root / "fold_0"), str(root / "preprocessed")
        self.local_rank, self.dataset_json, self.log = rank, {"file_ending": ".nii.gz"}, []
        self.label_manager = LabelManager({"background": 0, "organ": 1}, None)
        self.plans_manager = type("Plans", (), {"image_reader_writer_class": SimpleITKIO})()

    def print_to_log_file(self, *parts):
        self.log.append(" ".join(map(str, parts)))


def test_validation_distances_go_beside_nnunets_summary_on_rank_0_only(tmp_path):
    import json

    from nnugen.evaluation.surface_distances import write_validation_distances

    validation, references = tmp_path / "fold_0" / "validation", tmp_path / "preprocessed" / "gt_segmentations"
    validation.mkdir(parents=True)
    references.mkdir(parents=True)
    for index in range(3):  # gt_segmentations holds every case, validation/ only the fold's two
        reference = _plate((10, 10, 10), 0, 4).astype(np.uint8)
        _write(reference, references / f"case_{index}.nii.gz")
        if index:
            _write(_plate((10, 10, 10), 0, 4 + index), validation / f"case_{index}.nii.gz")  # z: 2 mm a voxel
    assert write_validation_distances(_Trainer(tmp_path)) is None  # no summary.json: validation did not run
    (validation / "summary.json").write_text("{}")
    assert write_validation_distances(_Trainer(tmp_path, rank=1)) is None
    assert not (validation / "distances_summary.json").exists()
    trainer = _Trainer(tmp_path)
    assert write_validation_distances(trainer) == validation / "distances_summary.json"
    result = json.loads((validation / "distances_summary.json").read_text())
    assert [entry["metrics"]["1"]["HD95"] for entry in result["metric_per_case"]] == pytest.approx([2.0, 4.0])
    assert result["mean"]["1"]["HD95"] == pytest.approx(3.0) and result["mean"]["1"]["NSD"] == 0.0
    assert trainer.log == ["HD95 / NSD (1 mm), foreground mean: 3.0 / 0.0 (distances_summary.json)"]
