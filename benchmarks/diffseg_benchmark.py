"""Diffusion segmentation vs nnU-Net's baseline on the demo phantoms, same plan and budget, through the real CLIs.

Trains NnugenBaselineTrainer and NnugenDiffSegTrainer (and, with --ablations, the ImgX-DiffSeg ablation variants;
with --samplers, the 1000-timestep variant for the sampler comparison) for the same number of iterations, predicts
the held-out cases, and prints Markdown tables of Dice per class and prediction time per case. Prediction time per
case is measured as (time for all test cases - time for one case) / (cases - 1), so the CLIs' start-up cost (about
10 s: nnU-Net imports every trainer) cancels. Results also go to WORK/diffseg_benchmark.json.

    python benchmarks/diffseg_benchmark.py --work-dir /tmp/bench [--epochs 10] [--iterations 25] [--ablations]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nnugen.demo.commands import set_nnunet_folders
from nnugen.demo.evaluation import dice_per_class
from nnugen.demo.phantom import LABELS, PhantomSpec, write_phantom_dataset

DATASET = 980
NAME = "BenchPhantom"
BIN = Path(sys.executable).parent


def run(command: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def prepare(work: Path, epochs: int, iterations: int) -> Path:
    folders = set_nnunet_folders(work)
    raw = Path(folders["nnUNet_raw"]) / f"Dataset{DATASET}_{NAME}"
    if not raw.exists():
        write_phantom_dataset(Path(folders["nnUNet_raw"]), DATASET, NAME, 12, 4, PhantomSpec(), seed=1)
        run([str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET), "-c", "3d_fullres", "-np", "2",
             "-npfp", "2"])
    sets = []
    for task in ("baseline", "segmentation"):
        sets += ["--set", f"{task}.training.epochs={epochs}", "--set",
                 f"{task}.training.iterations_per_epoch={iterations}", "--set",
                 f"{task}.training.val_iterations_per_epoch=2"]
    run([str(BIN / "nnugen_plan"), "-d", str(DATASET), "-c", "3d", "--overwrite", *sets])
    return raw


def train(trainer: str) -> float:
    return run([str(BIN / "nnUNetv2_train"), str(DATASET), "3d_fullres", "0", "-tr", trainer, "-p", "nnugenPlans",
                "-device", "cpu"])


def timed_prediction(command: list[str], raw: Path, output: Path) -> tuple[float, Path]:
    """(seconds per case, output folder with all cases) as (t(all) - t(one)) / (n - 1)."""
    cases = sorted(raw.glob("imagesTs/*_0000.nii.gz"))
    single = output.parent / f"{output.name}_single"
    for folder in (output, single):
        shutil.rmtree(folder, ignore_errors=True)
    one_input = output.parent / "one_case_input"
    shutil.rmtree(one_input, ignore_errors=True)
    one_input.mkdir(parents=True)
    shutil.copy(cases[0], one_input / cases[0].name)
    t_one = run([*command, "-i", str(one_input), "-o", str(single)])
    t_all = run([*command, "-i", str(raw / "imagesTs"), "-o", str(output)])
    return (t_all - t_one) / (len(cases) - 1), output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--ablations", action="store_true")
    parser.add_argument("--samplers", action="store_true")
    args = parser.parse_args()
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    raw = prepare(work, args.epochs, args.iterations)
    predictions = work / "predictions"
    results: dict[str, dict] = {"budget": {"epochs": args.epochs, "iterations_per_epoch": args.iterations}}

    trainers = ["NnugenBaselineTrainer", "NnugenDiffSegTrainer"]
    if args.ablations:
        trainers += ["NnugenDiffSegTrainer_eps", "NnugenDiffSegTrainer_noDice", "NnugenDiffSegTrainer_noRecycling",
                     "NnugenDiffSegTrainer_T1000"]
    elif args.samplers:
        trainers += ["NnugenDiffSegTrainer_T1000"]
    for trainer in trainers:
        results.setdefault("training_seconds", {})[trainer] = round(train(trainer), 1)

    common = ["-d", str(DATASET), "-c", "3d_fullres", "-f", "0", "-p", "nnugenPlans", "-device", "cpu", "-npp", "0",
              "-nps", "0"]
    rows = {}
    baseline = [str(BIN / "nnUNetv2_predict"), *common, "-tr", "NnugenBaselineTrainer"]
    for label, extra in (("nnU-Net baseline (no TTA)", ["--disable_tta"]), ("nnU-Net baseline (mirroring TTA)", [])):
        seconds, folder = timed_prediction([*baseline, *extra], raw, predictions / label.replace(" ", "_"))
        rows[label] = (seconds, dice_per_class(folder, raw / "labelsTs", LABELS))
    diffusion = [str(BIN / "nnugen_predict"), *common, "-tr", "NnugenDiffSegTrainer", "--seed", "0"]
    for label, extra in (("diffusion, 1 step", ["--steps", "1"]), ("diffusion, 5 steps", ["--steps", "5"]),
                         ("diffusion, 5 steps x 5 seeds", ["--steps", "5", "--seeds", "5"])):
        seconds, folder = timed_prediction([*diffusion, *extra], raw, predictions / label.replace(" ", "_"))
        rows[label] = (seconds, dice_per_class(folder, raw / "labelsTs", LABELS))
    for trainer in trainers[2:]:
        if trainer.endswith("T1000") and args.samplers:
            continue
        command = [str(BIN / "nnugen_predict"), *common, "-tr", trainer, "--seed", "0"]
        seconds, folder = timed_prediction(command, raw, predictions / trainer)
        rows[f"{trainer} (plans' sampler)"] = (seconds, dice_per_class(folder, raw / "labelsTs", LABELS))
    if args.samplers:
        t1000 = [str(BIN / "nnugen_predict"), *common, "-tr", "NnugenDiffSegTrainer_T1000", "--seed", "0"]
        for sampler, steps in (("ddim", 5), ("ddim", 10), ("ddim", 50), ("dpm_solver++", 5), ("dpm_solver++", 10),
                               ("dpm_solver++", 20), ("ddpm", 1000)):
            label = f"T1000: {sampler} {steps} steps"
            seconds, folder = timed_prediction([*t1000, "--sampler", sampler, "--steps", str(steps)], raw,
                                               predictions / label.replace(" ", "_").replace(":", ""))
            rows[label] = (seconds, dice_per_class(folder, raw / "labelsTs", LABELS))

    results["predictions"] = {k: {"seconds_per_case": round(s, 2), "dice": d} for k, (s, d) in rows.items()}
    (work / "diffseg_benchmark.json").write_text(json.dumps(results, indent=2))
    print(f"| model | {' | '.join(n for n, v in LABELS.items() if v)} | mean | s / case |")
    print("|---|" + "---|" * (len(LABELS) + 1))
    for label, (seconds, dice) in rows.items():
        mean = sum(dice.values()) / len(dice)
        print(f"| {label} | {' | '.join(f'{v:.3f}' for v in dice.values())} | {mean:.3f} | {seconds:.1f} |")
    print("training seconds:", results["training_seconds"])


if __name__ == "__main__":
    main()
