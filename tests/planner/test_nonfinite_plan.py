"""nnugen_plan refuses NaN and Infinity (issue 15, fault 4) from ``--set``, ``--overrides``, ``--gpu-memory-gb`` and a
hand-edited nnugenPlans.json: one line on stderr naming the field, exit code 1 (2 for the malformed file), and no
file written or changed."""

from __future__ import annotations

import json

import pytest
from nnugen.entrypoints.plan import main

from nnugen_planner.planner import PlanRequest, plan_dataset


def _one_line(capsys) -> str:
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnugen_plan: error: "), lines
    return lines[0]


@pytest.mark.parametrize("assignment, field", [
    ("segmentation.training.initial_lr=.nan", "segmentation.training.initial_lr: nan is not a finite number"),
    ("ddpm.training.initial_lr=.inf", "ddpm.training.initial_lr: inf is not a finite number"),
    ("ddpm.sampler.eta=.NaN", "ddpm.sampler.eta: nan is not a finite number"),
    ("anomaly.anomaly.target_fpr=.nan", "anomaly.anomaly.target_fpr: nan is not a finite number"),
    ("baseline.memory.budget_gb=1e400", "baseline.memory.budget_gb: inf is not a finite number"),
    ("segmentation.training.initial_lr=nan", "segmentation.training.initial_lr: expected float, got 'nan'"),
])
def test_set_nan_or_infinity_is_refused_and_nothing_is_written(fake_preprocessed, capsys, assignment, field):
    folder = fake_preprocessed("isotropic")
    assert main(["-d", "901", "--no-check", "--set", assignment]) == 1
    assert field in _one_line(capsys)
    assert not (folder / "nnugenPlans.json").exists()


@pytest.mark.parametrize("budget", ["inf", "Infinity", "-inf", "nan"])
def test_gpu_memory_budget_must_be_finite(fake_preprocessed, capsys, budget):
    folder = fake_preprocessed("isotropic")
    assert main(["-d", "901", "--no-check", f"--gpu-memory-gb={budget}"]) == 1
    assert f"--gpu-memory-gb {float(budget)}: must be a positive, finite number of GB" in _one_line(capsys)
    assert not (folder / "nnugenPlans.json").exists()
    with pytest.raises(ValueError, match=r"--gpu-memory-gb .*: must be a positive, finite number of GB"):
        plan_dataset(PlanRequest(dataset="901", gpu_memory_gb=float(budget)))


def test_overrides_file_with_nan_is_refused(fake_preprocessed, tmp_path, capsys):
    folder = fake_preprocessed("isotropic")
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("ddpm:\n  sampler: {eta: .nan}\nconfigurations:\n  3d:\n    anomaly:\n"
                         "      anomaly: {target_fpr: .inf}\n", encoding="utf-8")
    assert main(["-d", "901", "--no-check", "--overrides", str(overrides)]) == 1
    assert "is not a finite number" in _one_line(capsys)
    assert not (folder / "nnugenPlans.json").exists()


def test_nan_hand_edited_into_the_plans_is_refused_on_replan(fake_preprocessed, capsys):
    """json.dumps writes NaN as ``NaN`` (not standard JSON) and json.loads reads it back: the re-plan refuses it."""
    folder = fake_preprocessed("isotropic")
    target = plan_dataset(PlanRequest(dataset="901"))
    plans = json.loads(target.read_text())
    plans["configurations"]["3d_fullres"]["nnugen"]["tasks"]["ddpm"]["training"]["initial_lr"] = float("nan")
    target.write_text(json.dumps(plans))
    edited = target.read_bytes()
    assert main(["-d", "901", "--no-check"]) == 2  # a malformed file
    line = _one_line(capsys)
    assert "nnugenPlans.json: 3d_fullres.nnugen.tasks.ddpm.training.initial_lr: nan is not a finite number" in line
    assert target.read_bytes() == edited
    assert (folder / "nnugenPlans.json").is_file()


@pytest.mark.parametrize("where, value", [("nnugen", None), ("nnugen", [1]), ("configurations", [])])
def test_a_broken_existing_plans_file_is_one_line_not_a_traceback(fake_preprocessed, capsys, where, value):
    fake_preprocessed("isotropic")
    target = plan_dataset(PlanRequest(dataset="901"))
    plans = json.loads(target.read_text())
    if where == "nnugen":
        plans["configurations"]["2d"]["nnugen"] = value
    else:
        plans[where] = value
    target.write_text(json.dumps(plans))
    edited = target.read_bytes()
    assert main(["-d", "901", "--no-check"]) == 2  # a malformed file
    line = _one_line(capsys)
    assert "nnugenPlans.json: configurations" in line and "expected a mapping" in line and "--overwrite" in line
    assert target.read_bytes() == edited
    assert main(["-d", "901", "--no-check", "--overwrite"]) == 0


def test_an_existing_plans_file_that_is_not_text_is_one_line(fake_preprocessed, capsys):
    folder = fake_preprocessed("isotropic")
    (folder / "nnugenPlans.json").write_bytes(b"\xff\xfe{")
    assert main(["-d", "901", "--no-check"]) == 2  # a malformed file
    assert "nnugenPlans.json is not UTF-8 text" in _one_line(capsys)
