"""The demo's generation step (``run_generation_demo``, a budget smaller than ``--quick``'s) on the tiny 2D
phantoms, already planned as the demo plans them: it trains a joint image + label DDPM through nnugen_train, writes
samples with previews through nnugen_sample, scores them, unseen real cases, noise and phase-scrambled real cases in
one nnugen_evaluate call, and leaves the other tasks' settings as they were."""

from __future__ import annotations

import json

import pytest
from e2e_helpers import cli, demo_copy, run

pytestmark = pytest.mark.slow


def test_generation_step_trains_a_small_ddpm_and_writes_samples(tiny2d, tmp_path, monkeypatch, capsys):
    from nnugen.demo.generation_demo import (
        NOISE_SHARE,
        SAMPLES_DATASET,
        SCRAMBLED_SHARE,
        GenerationBudget,
        run_generation_demo,
    )
    from nnugen.demo.phantom import LABELS
    from nnugen.evaluation.folder_scores import folder_scores, foreground_mean

    root, env = demo_copy(tiny2d, tmp_path / "demo", monkeypatch)
    run([cli("nnugen_plan"), "-d", "902", "-c", "2d", "--set", "baseline.training.epochs=2", "--set",
         "baseline.training.iterations_per_epoch=5", "--set", "segmentation.sampler.steps=4"], env)
    said: list[str] = []
    log = root / "demo_log.txt"
    budget = GenerationBudget(epochs=2, iterations=10, cases=4, steps=5, widest=32, batch=4)
    section = run_generation_demo(902, "2d", root / "raw" / "Dataset902_Tiny2D", LABELS, root, budget, "cpu",
                                  said.append, log)

    samples = root / "samples" / "ddpm"
    dataset = samples / SAMPLES_DATASET
    for k in range(budget.cases):
        for name in (f"imagesTr/case_{k:04d}_0000.nii.gz", f"labelsTr/case_{k:04d}.nii.gz"):
            assert (dataset / name).is_file(), name
        assert (samples / "previews" / f"case_{k:04d}.png").is_file()
    assert json.loads((samples / "sampling.json").read_text())["sampler"]["steps"] == budget.steps
    tasks = json.loads((root / "preprocessed" / "Dataset902_Tiny2D" / "nnugenPlans.json").read_text())[
        "configurations"]["2d"]["nnugen"]["tasks"]
    assert tasks["ddpm"]["training"]["epochs"] == budget.epochs and tasks["ddpm"]["generation"]["mode"] == "joint"
    assert tasks["baseline"]["training"]["epochs"] == 2 and tasks["segmentation"]["sampler"]["steps"] == 4
    assert any("nnugen_train 902 0 2d --task ddpm" in line for line in said)
    # without the segmentation part, the part trains the baseline that scores its samples
    assert any("--task baseline" in line and "to score the samples" in line for line in said)

    # the numbers are the ones nnugen_evaluate and nnU-Net's statistics give, and the checks say what they show
    summaries = {name: json.loads((folder / "generation_summary.json").read_text())
                 for name, folder in (("samples", dataset), ("unseen_real", root / "samples" / "unseen_real"),
                                      ("noise", root / "samples" / "noise"),
                                      ("scrambled", root / "samples" / "scrambled"))}
    assert {s["cases"]["generated"] for s in summaries.values()} == {budget.cases}  # four sets of one size
    frechet = {name: summary["features"]["frechet"] for name, summary in summaries.items()}
    for name, value in frechet.items():
        assert section.numbers[f"frechet/{name}"] == value
    share = (frechet["samples"] - frechet["unseen_real"]) / (frechet["noise"] - frechet["unseen_real"])
    assert section.numbers["noise_share"] == pytest.approx(share)
    scrambled = (frechet["samples"] - frechet["unseen_real"]) / (frechet["scrambled"] - frechet["unseen_real"])
    assert section.numbers["scrambled_share"] == pytest.approx(scrambled)
    scores = folder_scores(root / "predictions" / "samples_segmented_by_nnunet", dataset / "labelsTr", LABELS)
    assert section.numbers["label_dice"] == foreground_mean({n: v["Dice"] for n, v in scores.items()})
    noise_check, scrambled_check, label_check = section.checks
    assert noise_check.passed == (share <= NOISE_SHARE) and f"{share:.2f}" in noise_check.measured
    assert scrambled_check.passed == (scrambled <= SCRAMBLED_SHARE) and f"{scrambled:.2f}" in scrambled_check.measured
    assert label_check.passed == (section.numbers["label_dice"] >= 0.5)
    assert section.pictures == [root / "pictures" / "generation.png"] and section.pictures[0].is_file()
    assert any(command.startswith(cli("nnugen_sample")) for command in section.commands)
    assert "$ " in log.read_text() and "nnugen_sample" in log.read_text()
    # the demo's bars on the terminal, while the commands' output went to the log: the training's epochs, steps and
    # loss (from its training_progress.json), then the sampled cases
    bars = capsys.readouterr().err
    assert f"epoch {budget.epochs}/{budget.epochs}: 100%" in bars and ", loss " in bars
    assert "cases: 100%" in bars and f"{budget.cases}/{budget.cases} [" in bars
