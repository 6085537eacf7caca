"""``nnugen_train ID FOLD CONFIG --val`` on a fold that never finished training (issue 15, fault 7): one line on stderr
naming the missing checkpoint_final.pth and how to train the fold, before nnU-Net's run creates the fold folder."""

from __future__ import annotations

import json

import pytest
from nnugen.entrypoints.train import main

from nnugen.folders.checkpoint_files import CheckpointError
from nnugen.folders.model_folder import ModelFolder
from nnugen.run.train_api import TrainRequest, check_request
from nnugen_planner.planner import PlanRequest, plan_dataset


@pytest.fixture()
def planned(fake_preprocessed, tmp_path, monkeypatch):
    """A planned dataset 901 and an empty nnUNet_results."""
    fake_preprocessed("isotropic")
    plan_dataset(PlanRequest(dataset="901"))
    results = tmp_path / "nnUNet_results"
    results.mkdir()
    monkeypatch.setenv("nnUNet_results", str(results))
    return results


@pytest.mark.parametrize("fold", ["0", "all"])
def test_val_on_an_untrained_fold_is_one_line_and_creates_nothing(planned, capsys, fold):
    assert main(["901", fold, "3d", "--val", "-device", "cpu"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnugen_train: error: --val: "), lines
    assert f"fold_{fold}/checkpoint_final.pth does not exist" in lines[0]
    assert f"nnugen_train 901 {fold} 3d --task seg" in lines[0]
    assert not any(planned.rglob("*")), list(planned.rglob("*"))  # no model folder, no empty fold_X


def test_val_with_an_unfinished_fold_or_a_broken_final_checkpoint_is_refused(planned):
    request = TrainRequest(dataset="901", fold="0", configuration="3d", device="cpu", only_validation=True)
    fold = ModelFolder.of("901", "NnugenDiffSegTrainer", "3d_fullres").fold(0)
    fold.mkdir(parents=True)
    (fold / "checkpoint_latest.pth").write_bytes(b"")  # interrupted: only the latest checkpoint
    with pytest.raises(ValueError, match=r"--val: .*fold_0/checkpoint_final\.pth does not exist.*resume it with --c"):
        check_request(request)
    (fold / "checkpoint_final.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"checkpoint_final\.pth does not load"):
        check_request(request)


def test_a_null_nnugen_section_is_one_line_for_nnugen_train(planned, capsys):
    """``"nnugen": null`` hand-written into nnugenPlans.json: nnugen_train names it in one line (it was a traceback)."""
    from nnugen.folders.dataset_folders import preprocessed_folder

    target = preprocessed_folder("901") / "nnugenPlans.json"
    plans = json.loads(target.read_text())
    plans["configurations"]["3d_fullres"]["nnugen"] = None
    target.write_text(json.dumps(plans))
    assert main(["901", "0", "3d", "-device", "cpu"]) == 2  # a malformed file
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["nnugen_train: error: 3d_fullres.nnugen: expected a mapping (the section nnugen_plan writes), got "
                     "null; re-run nnugen_plan"]
    assert not any(planned.rglob("*"))
