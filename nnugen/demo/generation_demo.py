"""``run_generation_demo``: the generation step of the demo. On the demo's phantom dataset, already planned and
preprocessed, it trains a small joint image + label DDPM through ``nnugen_train --task ddpm`` and writes a few cases
with their previews through ``nnugen_sample``.

The run length and a smaller denoiser are set with ``nnugen_plan --set ddpm.…``. The planner keeps earlier edits,
so the other tasks' settings (the demo's baseline and segmentation budgets) stay as they were.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nnugen.demo.commands import cli, run_logged
from nnugen.demo.progress_follow import files_watch, training_watch
from nnugen.folders.model_folder import ModelFolder
from nnugen.tasks import TASKS


@dataclass(frozen=True)
class GenerationBudget:
    epochs: int
    iterations: int
    cases: int
    steps: int
    widest: int
    """Width cap of the denoiser's stages (16, 32, ... up to this), instead of the planned 32 ... 320."""


def generation_budget(quick: bool) -> GenerationBudget:
    if quick:
        return GenerationBudget(epochs=1, iterations=10, cases=2, steps=10, widest=64)
    return GenerationBudget(epochs=2, iterations=15, cases=3, steps=15, widest=64)


def small_features(planned: list[int], widest: int) -> list[int]:
    """16, 32, 64, ... per stage, never above the planned width or ``widest``."""
    return [min(int(f), 16 * 2 ** s, widest) for s, f in enumerate(planned)]


def _planned_features(dataset_name: str, configuration: str) -> list[int]:
    plans = Path(os.environ["nnUNet_preprocessed"]) / dataset_name / "nnugenPlans.json"
    if not plans.is_file():
        raise RuntimeError(f"{plans} is missing; the demo runs nnugen_plan before the generation step")
    section = json.loads(plans.read_text())["configurations"][configuration]["nnugen"]
    return section["tasks"]["ddpm"]["denoiser"]["features_per_stage"]


def run_generation_demo(dataset_id: int, configuration: str, raw: Path, work_dir: Path, quick: bool, device: str,
                        say: Callable[[str], None], log: Path) -> Path:
    """Train a small DDPM (image + label together) on fold 0 and write a few samples; returns the sample folder.

    ``raw`` is the demo's raw dataset folder (its name is the dataset's name); ``say`` prints a stage line; every
    command and its output go to ``log``."""
    budget = generation_budget(quick)
    features = small_features(_planned_features(raw.name, configuration), budget.widest)
    settings = {
        "training.epochs": budget.epochs,
        "training.iterations_per_epoch": budget.iterations,
        "training.val_iterations_per_epoch": 1,
        "training.preview_every": budget.epochs,
        "generation.mode": "joint",
        "generation.preview_steps": budget.steps,
        "denoiser.features_per_stage": json.dumps(features, separators=(",", ":")),
        "denoiser.attention_stages": "[]",
    }
    sets = [a for key, value in settings.items() for a in ("--set", f"ddpm.{key}={value}")]
    say(f"nnugen_plan --set ddpm.… (generator: {budget.epochs} epoch(s) x {budget.iterations} iterations, "
        f"denoiser {features})")
    run_logged([cli("nnugen_plan"), "-d", str(dataset_id), "-c", configuration, *sets], log)
    say(f"nnugen_train {dataset_id} 0 {configuration} --task ddpm -device {device} (image + label jointly)")
    fold = ModelFolder.of(dataset_id, TASKS["ddpm"].trainer, configuration).fold(0)
    run_logged([cli("nnugen_train"), str(dataset_id), "0", configuration, "--task", "ddpm", "-device", device,
                "--seed", "0"], log, training_watch(fold))
    output = work_dir / "samples" / "ddpm"
    if output.exists():
        shutil.rmtree(output)
    say(f"nnugen_sample: {budget.cases} synthetic cases with labels, {budget.steps} sampler steps")
    run_logged([cli("nnugen_sample"), str(dataset_id), configuration, str(budget.cases), str(output), "--steps",
                str(budget.steps), "--seed", "0", "-device", device], log,
               files_watch(output / "previews", [f"case_{k:04d}.png" for k in range(budget.cases)], "cases"))
    say(f"synthetic cases in {output} (previews in {output / 'previews'}; real ones in {raw / 'imagesTr'}). "
        "So short a training checks the pipeline; it does not give realistic images")
    return output
