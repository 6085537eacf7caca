"""nnugen_predict never writes over what it reads, nor lets two cases write one file, and predicts nothing from a
broken input image: all refused by ``check_request`` before anything is loaded or written (issue 15, faults 2 and 6).
Each failure is one ValueError that says what to change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnugen.entrypoints.predict import main as predict_main

from nnugen.inference.predict_api import PredictRequest, check_request

SEG_TRAINER, ANOMALY_TRAINER = "NnugenDiffSegTrainer", "NnugenAnomalyTrainer"


def write_image(path: Path, value: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 5, 6), value, dtype=np.float32)), str(path))
    return path


def model_folder(root: Path, trainer: str = SEG_TRAINER) -> Path:
    folder = root / "Dataset901_Tiny" / f"{trainer}__nnugenPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1"}, "file_ending": ".nii.gz",
                                                     "labels": {"background": 0, "organ": 1}}))
    (folder / "plans.json").write_text(json.dumps({"image_reader_writer": "SimpleITKIO"}))
    (folder / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    return folder


def request(tmp_path: Path, input_folder: Path, output_folder: Path, **changes) -> PredictRequest:
    folder = changes.pop("model_folder", None) or model_folder(tmp_path / "results")
    return PredictRequest(input_folder, output_folder, model_folder=folder, device="cpu", **changes)


def test_output_folder_equal_to_the_input_is_refused_and_the_input_untouched(tmp_path):
    image = write_image(tmp_path / "X" / "P_0000.nii.gz")
    before = image.read_bytes()
    with pytest.raises(ValueError, match=r"^-o .* is -i .*; .* choose an output folder outside it$"):
        check_request(request(tmp_path, tmp_path / "X", tmp_path / "X"))
    assert image.read_bytes() == before and sorted(p.name for p in (tmp_path / "X").iterdir()) == ["P_0000.nii.gz"]


@pytest.mark.parametrize(("output", "message"), [
    ("in/out", r"-o .*in/out is inside -i"),
    ("in/../in", r"-o .* is -i"),  # the same folder, spelt differently
    ("link", r"-o .*link is -i"),  # a symbolic link to the input
    ("results/Dataset901_Tiny/NnugenDiffSegTrainer__nnugenPlans__3d_fullres/preds", r"inside the model folder"),
    (".", r"-i .* lies inside -o"),
])
def test_output_folders_that_overlap_what_is_read_are_refused(tmp_path, output, message):
    write_image(tmp_path / "in" / "a_0000.nii.gz")
    (tmp_path / "link").symlink_to(tmp_path / "in", target_is_directory=True)
    with pytest.raises(ValueError, match=message):
        check_request(request(tmp_path, tmp_path / "in", tmp_path / output))
    assert not (tmp_path / "in" / "out").exists()


def test_separate_folders_pass(tmp_path):
    write_image(tmp_path / "in" / "a_0000.nii.gz")
    checked = check_request(request(tmp_path, tmp_path / "in", tmp_path / "out", save_uncertainty=True))
    assert [c.identifier for c in checked.cases] == ["a"]


def test_cases_whose_uncertainty_maps_collide_are_refused(tmp_path):
    for case in ("a", "a_entropy"):
        write_image(tmp_path / "in" / f"{case}_0000.nii.gz")
    with pytest.raises(ValueError, match=r"cases a and a_entropy .* would both write a_entropy.nii.gz .*"
                                         r"--save-uncertainty.*rename one"):
        check_request(request(tmp_path, tmp_path / "in", tmp_path / "out", save_uncertainty=True))
    # without the maps each case writes its own file; -num_parts runs are checked over all cases the same way
    check_request(request(tmp_path, tmp_path / "in", tmp_path / "out2",
                          model_folder=tmp_path / "results" / "Dataset901_Tiny" /
                          "NnugenDiffSegTrainer__nnugenPlans__3d_fullres"))
    with pytest.raises(ValueError, match="would both write a_entropy.nii.gz"):
        check_request(request(tmp_path, tmp_path / "in", tmp_path / "out3", save_uncertainty=True, num_parts=2,
                              part_id=1, model_folder=tmp_path / "results" / "Dataset901_Tiny" /
                              "NnugenDiffSegTrainer__nnugenPlans__3d_fullres"))


@pytest.mark.parametrize("other", ["a_anomaly", "a_anomaly_variance", "a_counterfactual"])
def test_cases_whose_anomaly_outputs_collide_are_refused(tmp_path, other):
    for case in ("a", other):
        write_image(tmp_path / "in" / f"{case}_0000.nii.gz")
    folder = model_folder(tmp_path / "results", ANOMALY_TRAINER)
    with pytest.raises(ValueError, match=f"cases a and {other} .* would both write {other}.nii.gz"):
        check_request(request(tmp_path, tmp_path / "in", tmp_path / "out", model_folder=folder))


def _broken_inputs(folder: Path) -> tuple[Path, Path]:
    write_image(folder / "good_0000.nii.gz")
    truncated = write_image(folder / "cut_0000.nii.gz", 1.0)
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    nan = write_image(folder / "nan_0000.nii.gz", np.nan)
    return truncated, nan


def test_broken_input_images_are_all_named_in_one_error(tmp_path):
    truncated, nan = _broken_inputs(tmp_path / "in")
    with pytest.raises(ValueError) as error:
        check_request(request(tmp_path, tmp_path / "in", tmp_path / "out"))
    message = str(error.value)
    assert "\n" not in message and message.startswith("2 input image(s) cannot be used, nothing was written")
    assert f"{truncated}: truncated gzip stream" in message and f"{nan}: 120 NaN voxel(s)" in message
    assert "--skip-input-check" in message
    checked = check_request(request(tmp_path, tmp_path / "in", tmp_path / "out2", check_inputs=False,
                                    model_folder=tmp_path / "results" / "Dataset901_Tiny" /
                                    "NnugenDiffSegTrainer__nnugenPlans__3d_fullres"))
    assert [c.identifier for c in checked.cases] == ["cut", "good", "nan"]


def test_a_part_checks_only_its_own_cases(tmp_path):
    _broken_inputs(tmp_path / "in")  # cases cut, good, nan: part 1 of 3 is "good"
    checked = check_request(request(tmp_path, tmp_path / "in", tmp_path / "out", num_parts=3, part_id=1))
    assert [c.identifier for c in checked.cases] == ["good"]


def test_cli_refuses_broken_inputs_and_overlapping_folders_with_one_line(tmp_path, capsys):
    truncated, nan = _broken_inputs(tmp_path / "in")
    folder = model_folder(tmp_path / "results")
    common = ["-m", str(folder), "-device", "cpu", "-f", "0"]
    assert predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), *common]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("nnugen_predict: error: 2 input image(s)") and str(truncated) in line and str(nan) in line
    assert not (tmp_path / "out").exists()
    listing = sorted(p.name for p in (tmp_path / "in").iterdir())
    assert predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "in"), *common, "--skip-input-check"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "is -i" in line and sorted(p.name for p in (tmp_path / "in").iterdir()) == listing


def test_skip_input_check_flag_reaches_the_request(monkeypatch, tmp_path):
    from nnugen.inference import predict_api

    seen = []
    monkeypatch.setattr(predict_api, "predict", lambda r: seen.append(r) or [])
    base = ["-i", str(tmp_path), "-o", str(tmp_path / "o"), "-m", str(tmp_path), "-device", "cpu"]
    assert predict_main(base) == 0 and predict_main([*base, "--skip-input-check"]) == 0
    assert [r.check_inputs for r in seen] == [True, False]


def test_a_dataset_name_that_leaves_nnunet_results_is_refused(tmp_path, monkeypatch):
    write_image(tmp_path / "in" / "a_0000.nii.gz")
    model_folder(tmp_path / "results")
    (tmp_path / "results" / "sub" / "Dataset901_X").mkdir(parents=True)  # so that the name resolves to the model
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results" / "sub"))
    with pytest.raises(ValueError, match="dataset name .* is not a plain file name"):
        check_request(PredictRequest(tmp_path / "in", tmp_path / "out", dataset="Dataset901_X/../../Dataset901_Tiny",
                                     configuration="3d", device="cpu"))
