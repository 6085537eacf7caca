"""The input checks of nnugen_predict that need no model and no torch: cases and channels of the input folder, the
request's numbers, the model folder. Each failure is a ValueError whose message says what to change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnugen.inference.input_cases import find_cases
from nnugen.inference.predict_api import PredictRequest, check_request

CHANNELS = {"0": "T1", "1": "T2"}


def write_image(path: Path, shape: tuple[int, ...] = (4, 5, 6), components: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.zeros((*shape, components) if components > 1 else shape, dtype=np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=components > 1), str(path))
    return path


def model_folder(root: Path, channels: dict[str, str] = CHANNELS, folds: tuple[int, ...] = (0,)) -> Path:
    folder = root / "Dataset901_Tiny" / "NnugenDiffSegTrainer__nnugenPlans__3d_fullres"
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"channel_names": channels, "file_ending": ".nii.gz",
                                                     "labels": {"background": 0, "organ": 1}}))
    (folder / "plans.json").write_text(json.dumps({"image_reader_writer": "SimpleITKIO"}))
    for fold in folds:
        (folder / f"fold_{fold}").mkdir()
        (folder / f"fold_{fold}" / "checkpoint_final.pth").write_bytes(b"")
    return folder


def test_cases_are_sorted_with_one_file_per_channel(tmp_path):
    for case in ("b", "a"):
        for channel in (1, 0):
            write_image(tmp_path / f"{case}_{channel:04d}.nii.gz")
    (tmp_path / ".a_0000.nii.gz.1234.tmp.nii.gz").write_bytes(b"")  # an interrupted write: ignored
    (tmp_path / "notes.txt").write_text("ignored")
    cases = find_cases(tmp_path, ".nii.gz", CHANNELS)
    assert [c.identifier for c in cases] == ["a", "b"]
    assert [p.name for p in cases[0].files] == ["a_0000.nii.gz", "a_0001.nii.gz"]


@pytest.mark.parametrize(("files", "message"), [
    ((), "no images ending in .nii.gz"),
    (("a_0000.nii.gz",), r"case a .* has 1 channel file\(s\) \(_0000\) but the model expects 2 \(_0000 T1, _0001 T2\)"),
    (("a_0000.nii.gz", "a_0001.nii.gz", "a_0002.nii.gz"), "case a .* has 3 channel file"),
    (("a.nii.gz",), "a.nii.gz .* has no channel number"),
])
def test_bad_input_folders_are_named(tmp_path, files, message):
    for name in files:
        write_image(tmp_path / name)
    with pytest.raises(ValueError, match=message):
        find_cases(tmp_path, ".nii.gz", CHANNELS)


def test_missing_input_folder(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        find_cases(tmp_path / "nope", ".nii.gz", CHANNELS)


def test_a_vector_image_is_more_than_one_channel(tmp_path):
    write_image(tmp_path / "a_0000.nii.gz", components=2)
    with pytest.raises(ValueError, match="a_0000.nii.gz holds 2 channels"):
        find_cases(tmp_path, ".nii.gz", {"0": "T1"})


@pytest.mark.parametrize(("changes", "message"), [
    ({"steps": 0}, "--steps 0: must be at least 1"),
    ({"seeds": 0}, "--ensemble-size 0: must be at least 1"),
    ({"sampler": "euler"}, "unknown sampler 'euler'; choose one of ddpm, ddim, dpm_solver\\+\\+"),
    ({"eta": 1.5}, "--eta 1.5"),
    ({"spacing": "karras"}, "--spacing karras: choose one of uniform, trailing, log-snr"),
    ({"num_parts": 2, "part_id": 2}, "-part_id 2 / -num_parts 2"),
    ({"device": "tpu"}, "-device tpu"),
    ({"folds": (0, 3)}, "no checkpoint_final.pth for fold\\(s\\) 3"),
    ({"checkpoint": "checkpoint_best.pth"}, "no fold_X/checkpoint_best.pth"),
])
def test_bad_requests_fail_before_anything_is_loaded(tmp_path, changes, message):
    folder = model_folder(tmp_path / "results")
    for channel in (0, 1):
        write_image(tmp_path / "in" / f"a_{channel:04d}.nii.gz")
    with pytest.raises(ValueError, match=message):
        check_request(PredictRequest(tmp_path / "in", tmp_path / "out", model_folder=folder,
                                     **{"device": "cpu", **changes}))
    assert not (tmp_path / "out").exists()


def test_model_folder_from_dataset_trainer_plans_configuration(tmp_path, monkeypatch):
    folder = model_folder(tmp_path / "results", folds=(0, 2))
    for channel in (0, 1):
        for case in ("a", "b", "c"):
            write_image(tmp_path / "in" / f"{case}_{channel:04d}.nii.gz")
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    checked = check_request(PredictRequest(tmp_path / "in", tmp_path / "out", dataset="901", configuration="3d",
                                           device="cpu", num_parts=2, part_id=1))
    assert checked.model_folder == folder
    assert checked.folds == (0, 2)  # auto-detected
    assert [c.identifier for c in checked.cases] == ["b"]  # nnU-Net's split: cases[part_id::num_parts]
    with pytest.raises(ValueError, match="either -m MODEL_FOLDER or -d"):
        check_request(PredictRequest(tmp_path / "in", tmp_path / "out", dataset="901", model_folder=folder))
    with pytest.raises(ValueError, match="model folder .* does not exist"):
        check_request(PredictRequest(tmp_path / "in", tmp_path / "out", dataset="901", configuration="2d"))
