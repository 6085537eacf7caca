"""The demo's segmentation part (``run_segmentation_demo``) on the tiny 2D phantoms, at a test budget: both models
train through nnugen_train, predict through nnUNetv2_predict / nnugen_predict, are scored by nnugen_evaluate, and the
section's numbers, checks and picture are the ones those files give."""

from __future__ import annotations

import json
import math

import pytest
from e2e_helpers import cli, demo_copy, run

pytestmark = pytest.mark.slow


def test_segmentation_part_trains_both_models_scores_them_and_draws(tiny2d, tmp_path, monkeypatch):
    from nnugen.demo.phantom import LABELS
    from nnugen.demo.segmentation_demo import ENSEMBLE, ERROR_AUROC, FOUND_DICE, TITLES, run_segmentation_demo

    root, env = demo_copy(tiny2d, tmp_path / "demo", monkeypatch)
    budget = [a for task in ("baseline", "segmentation") for a in (
        "--set", f"{task}.training.epochs=1", "--set", f"{task}.training.iterations_per_epoch=6",
        "--set", f"{task}.training.val_iterations_per_epoch=1")]
    run([cli("nnugen_plan"), "-d", "902", "-c", "2d", *budget, "--set", "segmentation.sampler.steps=2",
         "--set", "segmentation.training.val_sampling_steps=2"], env)
    raw = root / "raw" / "Dataset902_Tiny2D"
    said: list[str] = []
    section = run_segmentation_demo(902, "2d", raw, LABELS, root, "1 epoch x 6 iterations", "cpu", said.append,
                                    root / "demo_log.txt")

    cases = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTs").glob("*.nii.gz"))
    baseline, diffusion = root / "predictions" / "NnugenBaselineTrainer", root / "predictions" / "NnugenDiffSegTrainer"
    for case in cases:
        assert (baseline / f"{case}.npz").is_file()  # --save_probabilities: the softmax entropy is scored
        assert (diffusion / f"{case}_entropy.nii.gz").is_file() and (diffusion / f"{case}_variance.nii.gz").is_file()
    for folder in (baseline, diffusion):
        assert {"summary.json", "distances_summary.json", "uncertainty_summary.json"} <= {p.name for p in
                                                                                         folder.iterdir()}
    # the numbers are nnugen_evaluate's, the checks say what they show
    for title, folder in ((TITLES["baseline"], baseline), (TITLES["seg"], diffusion)):
        means = json.loads((folder / "summary.json").read_text())["mean"]
        for name, value in LABELS.items():
            if value:
                dice = section.numbers[f"dice/{title}/{name}"]
                assert dice == means[str(value)]["Dice"] or (math.isnan(dice) and means[str(value)]["Dice"] is None)
    checks = {check.claim: check for check in section.checks}
    assert len(checks) == 2 * 2 + 1
    assert checks[f"{TITLES['seg']} finds lesion (Dice)"].passed == (
        section.numbers[f"dice/{TITLES['seg']}/lesion"] >= FOUND_DICE)
    pooled = json.loads((diffusion / "uncertainty_summary.json").read_text())["pooled"]["entropy"]
    assert section.numbers["error_auroc/seg"] == pooled["auroc"]
    uncertainty = checks["the ensemble's entropy sits where its errors are (error-detection AUROC)"]
    assert uncertainty.passed == (pooled["auroc"] >= ERROR_AUROC)
    assert f"mean of {ENSEMBLE} seeds" in section.lines[0]
    assert [caption for caption, _ in section.tables] == [
        "Dice per class (nnU-Net's summary.json, higher is better)", "HD95 per class in mm (lower is better)"]
    assert "organ" in section.tables[0][1] and "lesion" in section.tables[0][1]
    assert section.pictures == [root / "pictures" / "segmentation.png"] and section.pictures[0].is_file()
    assert sum(command.startswith(cli("nnugen_evaluate")) for command in section.commands) == 2
