"""Diffusion segmentation vs nnU-Net's baseline on the demo phantoms, same plan and budget, through the real CLIs.

Trains NnugenBaselineTrainer and NnugenDiffSegTrainer (with --ablations also the ImgX-DiffSeg ablation variants
``_eps``, ``_noDice``, ``_noRecycling``, ``_T1000``, and ``_residual``, the denoiser with residual stages) for the
same number of iterations, once per training seed, and scores the held-out cases: nnU-Net's Dice and HD95 (mm) per
class (nnugen.evaluation.folder_scores, docs/evaluation.md), mean and spread over the training seeds. Each trained
model folder is moved to WORK/models/seed_S/TRAINER, so several seeds live side by side, and predicted from there
with ``nnUNetv2_predict_from_modelfolder`` (baseline) and ``nnugen_predict -m`` (diffusion).

With ``--warm-start N [N ...]`` the diffusion segmenter is also fine-tuned from each seed's trained baseline
(``nnugen_train --task seg -pretrained_weights .../checkpoint_final.pth``) for N iterations each (the plan's
iterations per epoch times N / iterations epochs), predicted as the diffusion model trained from scratch: the
fine-tuning curve of issue 16, next to the baseline's Dice. At 0 iterations the warm-started model's segmentation is
the baseline's exactly (tests/networks/test_plain_unet_weights.py, tests/e2e/test_warm_start_e2e.py). With
``--equal-budget`` the baseline is also trained for its budget plus the largest N (the warm start's total number of
iterations), so that the curve's end can be compared with nnU-Net at equal compute.

Time is not measured here (process start-up swamps it on a small test set): ``predict_time.py`` times prediction
per case in one process, ``sampler_comparison.py`` the samplers. Results go to WORK/diffseg_benchmark.json.

With ``--real`` the cases are the augmented MNI152 scans of ``nnugen_demo --real`` (12 training, 4 held-out; one real
template under random deformations, so not a test of generalisation) instead of phantoms.

    python benchmarks/diffseg_benchmark.py --work-dir /tmp/bench [--2d] [--real] [--epochs 6] [--iterations 25]
        [--train-seeds 0 1 2] [--ablations] [--warm-start 25 50 100 200 [--equal-budget]]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from nnugen.demo.commands import set_nnunet_folders
from nnugen.demo.mni_dataset import write_mni_dataset
from nnugen.demo.phantom import PhantomSpec, write_phantom_dataset
from nnugen.evaluation.folder_scores import folder_scores, foreground_mean

BIN = Path(sys.executable).parent
ABLATIONS = (
    "NnugenDiffSegTrainer_T1000",
    "NnugenDiffSegTrainer_residual",
    "NnugenDiffSegTrainer_noRecycling",
    "NnugenDiffSegTrainer_eps",
    "NnugenDiffSegTrainer_noDice",
)


def run(command: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def prepare(work: Path, dataset: int, configuration: str, shape: tuple[int, ...] | None, epochs: int,
            iterations: int) -> Path:
    """Write the dataset (phantoms of ``shape``; the augmented MNI152 cases when ``shape`` is None), plan and
    preprocess it with nnU-Net, and plan nnugen's budget."""
    folders = set_nnunet_folders(work)
    name = f"BenchPhantom{len(shape)}D" if shape else "BenchMNI"
    raw = Path(folders["nnUNet_raw"]) / f"Dataset{dataset}_{name}"
    if not raw.exists():
        if shape:
            write_phantom_dataset(Path(folders["nnUNet_raw"]), dataset, name, 12, 4, PhantomSpec(shape=shape), seed=1)
        else:
            write_mni_dataset(Path(folders["nnUNet_raw"]), dataset, name, 12, 4, seed=1)
        run(
            [
                str(BIN / "nnUNetv2_plan_and_preprocess"),
                "-d",
                str(dataset),
                "-c",
                configuration,
                "-np",
                "2",
                "-npfp",
                "2",
            ]
        )
    sets = []
    for task in ("baseline", "segmentation"):
        sets += [
            "--set",
            f"{task}.training.epochs={epochs}",
            "--set",
            f"{task}.training.iterations_per_epoch={iterations}",
            "--set",
            f"{task}.training.val_iterations_per_epoch=2",
        ]
    run([str(BIN / "nnugen_plan"), "-d", str(dataset), "-c", configuration, "--overwrite", *sets])
    return raw


def train(dataset: int, configuration: str, trainer: str, seed: int, destination: Path,
          pretrained: Path | None = None) -> float:
    """Train fold 0 with NNUGEN_SEED=seed (and NNUGEN_PRETRAINED_WEIGHTS=pretrained: nnugen_train's
    -pretrained_weights), then move the model folder to ``destination`` (kept from an earlier, interrupted run of
    this script if it holds a final checkpoint: 0 seconds)."""
    if (destination / "fold_0" / "checkpoint_final.pth").is_file():
        return 0.0
    seconds = run(
        [
            str(BIN / "nnUNetv2_train"),
            str(dataset),
            configuration,
            "0",
            "-tr",
            trainer,
            "-p",
            "nnugenPlans",
            "-device",
            "cpu",
        ],
        env={**os.environ, "NNUGEN_SEED": str(seed), "NNUGEN_PRETRAINED_WEIGHTS": str(pretrained or "")},
    )
    results = Path(os.environ["nnUNet_results"])
    trained = next(results.glob(f"Dataset{dataset}_*")) / f"{trainer}__nnugenPlans__{configuration}"
    shutil.rmtree(destination, ignore_errors=True)
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(trained, destination)
    return seconds


def replan(dataset: int, configuration: str, epochs: int, iterations: int, task: str = "segmentation") -> None:
    """Set the training budget of one task of the plans (the other tasks' settings and edits stay)."""
    if epochs < 1:
        raise SystemExit(f"--warm-start needs multiples of --iterations ({iterations})")
    run([str(BIN / "nnugen_plan"), "-d", str(dataset), "-c", configuration, "--no-check",
         "--set", f"{task}.training.epochs={epochs}",
         "--set", f"{task}.training.iterations_per_epoch={iterations}"])


def scores(output: Path, raw: Path) -> dict[str, dict[str, float]]:
    """nnU-Net's Dice and HD95 / NSD per class: {class: {"Dice", "HD95", "NSD"}}."""
    return folder_scores(output, raw / "labelsTs", labels_of(raw), distances=True)


def labels_of(raw: Path) -> dict[str, int]:
    """The dataset's classes (dataset.json's ``labels``: the phantoms' or the MNI152 cases')."""
    return {name: int(value) for name, value in json.loads((raw / "dataset.json").read_text())["labels"].items()}


def predict(command: list[str], raw: Path, output: Path) -> dict[str, dict[str, float]]:
    """Scores per class of the prediction; one finished by an earlier, interrupted run of this script is reused."""
    if (output / "done").is_file():
        return scores(output, raw)
    shutil.rmtree(output, ignore_errors=True)
    # nnUNetv2_predict_from_modelfolder, unlike nnUNetv2_predict, has no in-process path for -npp 0 / -nps 0
    workers = "1" if command[0].endswith("nnUNetv2_predict_from_modelfolder") else "0"
    run(
        [
            *command,
            "-i",
            str(raw / "imagesTs"),
            "-o",
            str(output),
            "-f",
            "0",
            "-device",
            "cpu",
            "-npp",
            workers,
            "-nps",
            workers,
        ]
    )
    (output / "done").write_text("")
    return scores(output, raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--2d", dest="two_d", action="store_true", help="96 x 96 phantoms, the 2d configuration")
    parser.add_argument("--real", action="store_true",
                        help="the augmented MNI152 cases of nnugen_demo --real (grey and white matter) instead of "
                             "phantoms; with --2d, nnU-Net's 2d configuration of them")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=25)
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--ablations", action="store_true")
    parser.add_argument("--warm-start", type=int, nargs="+", default=[], metavar="N",
                        help="also fine-tune diffusion from each seed's baseline for N iterations (multiples of "
                             "--iterations)")
    parser.add_argument("--equal-budget", action="store_true",
                        help="with --warm-start: also train the baseline for its budget plus the largest N, the "
                             "warm start's total, so the fine-tuning curve can be read at equal compute")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=[],
        metavar="TRAINER",
        help="more trainers, e.g. NnugenBaselineTrainer_noDeepSupervision",
    )
    args = parser.parse_args()
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    dataset, configuration, shape = (981, "2d", (96, 96)) if args.two_d else (980, "3d_fullres", (48, 48, 48))
    if args.real:
        dataset, shape = 982 if args.two_d else 983, None
    raw = prepare(work, dataset, configuration, shape, args.epochs, args.iterations)
    trainers = ["NnugenBaselineTrainer", "NnugenDiffSegTrainer", *(ABLATIONS if args.ablations else ()), *args.variants]
    results: dict = {
        "configuration": configuration,
        "budget": {"epochs": args.epochs, "iterations": args.iterations},
        "training_seconds": {},
        "dice": {},
        "hd95_mm": {},
    }
    for seed in args.train_seeds:
        for trainer in trainers:
            model = work / "models" / f"seed_{seed}" / trainer
            results["training_seconds"][f"{trainer} seed {seed}"] = round(
                train(dataset, configuration, trainer, seed, model), 1
            )
            out = work / "predictions" / f"seed_{seed}"
            rows: dict[str, list[str]] = {}
            if trainer == "NnugenBaselineTrainer":
                baseline = [str(BIN / "nnUNetv2_predict_from_modelfolder"), "-m", str(model)]
                rows = {
                    "nnU-Net baseline, no TTA": [*baseline, "--disable_tta"],
                    "nnU-Net baseline, mirroring TTA": baseline,
                }
            elif trainer == "NnugenDiffSegTrainer":
                diffusion = [str(BIN / "nnugen_predict"), "-m", str(model), "--seed", "0"]
                rows = {
                    "diffusion, 1 step": [*diffusion, "--steps", "1"],
                    "diffusion, 5 steps": [*diffusion, "--steps", "5"],
                    "diffusion, 5 steps x 5 seeds": [*diffusion, "--steps", "5", "--ensemble-size", "5"],
                }
            elif trainer.startswith("NnugenBaselineTrainer"):
                rows = {
                    f"{trainer}, no TTA": [
                        str(BIN / "nnUNetv2_predict_from_modelfolder"),
                        "-m",
                        str(model),
                        "--disable_tta",
                    ]
                }
            else:
                rows = {
                    f"{trainer} (plans' sampler, 5 steps)": [
                        str(BIN / "nnugen_predict"),
                        "-m",
                        str(model),
                        "--seed",
                        "0",
                    ]
                }
            for label, command in rows.items():
                record(results, label, predict(command, raw, out / label.replace(" ", "_").replace(",", "")), seed)
            (work / "diffseg_benchmark.json").write_text(json.dumps(results, indent=2))
        for iterations in args.warm_start:
            label = f"diffusion from the baseline, {iterations} iterations"
            model = work / "models" / f"seed_{seed}" / f"warm_{iterations}"
            if not (model / "fold_0" / "checkpoint_final.pth").is_file():
                replan(dataset, configuration, iterations // args.iterations, args.iterations)
                baseline = work / "models" / f"seed_{seed}" / "NnugenBaselineTrainer" / "fold_0"
                seconds = train(dataset, configuration, "NnugenDiffSegTrainer", seed, model,
                                pretrained=baseline / "checkpoint_final.pth")
                results["training_seconds"][f"{label} seed {seed}"] = round(seconds, 1)
                replan(dataset, configuration, args.epochs, args.iterations)
            command = [str(BIN / "nnugen_predict"), "-m", str(model), "--seed", "0", "--steps", "5"]
            for name, extra in ((f"{label}, 5 steps", []), (f"{label}, 5 steps x 5 seeds", ["--ensemble-size", "5"])):
                record(results, name, predict([*command, *extra], raw,
                                              work / "predictions" / f"seed_{seed}" / name.replace(" ", "_")), seed)
            (work / "diffseg_benchmark.json").write_text(json.dumps(results, indent=2))
        if args.equal_budget and args.warm_start:
            total = args.epochs * args.iterations + max(args.warm_start)
            label = f"nnU-Net baseline, {total} iterations"
            model = work / "models" / f"seed_{seed}" / f"baseline_{total}"
            if not (model / "fold_0" / "checkpoint_final.pth").is_file():
                replan(dataset, configuration, total // args.iterations, args.iterations, task="baseline")
                seconds = train(dataset, configuration, "NnugenBaselineTrainer", seed, model)
                results["training_seconds"][f"{label} seed {seed}"] = round(seconds, 1)
                replan(dataset, configuration, args.epochs, args.iterations, task="baseline")
            baseline = [str(BIN / "nnUNetv2_predict_from_modelfolder"), "-m", str(model)]
            for name, extra in ((f"{label}, no TTA", ["--disable_tta"]), (f"{label}, mirroring TTA", [])):
                record(results, name, predict([*baseline, *extra], raw,
                                              work / "predictions" / f"seed_{seed}" / name.replace(" ", "_")), seed)
            (work / "diffseg_benchmark.json").write_text(json.dumps(results, indent=2))

    classes = [name for name, value in labels_of(raw).items() if value]
    spread = "mean +- sd over training seeds" if len(args.train_seeds) > 1 else "one training seed"
    for metric, key in (("Dice", "dice"), ("HD95 mm", "hd95_mm")):
        print(f"\n| model, {metric} ({spread}) | {' | '.join(classes)} | mean |\n|---|" + "---|" * (len(classes) + 1))
        for label, per_seed in results[key].items():
            cells = [_cell([d[c] for d in per_seed]) for c in classes]
            cells.append(_cell([foreground_mean(d) for d in per_seed]))
            print(f"| {label} | {' | '.join(cells)} |")
    print("training seconds:", results["training_seconds"])


def record(results: dict, label: str, per_class: dict[str, dict[str, float]], seed: int) -> None:
    """Keep one prediction's Dice and HD95 per class under ``label``."""
    results["dice"].setdefault(label, []).append({c: s["Dice"] for c, s in per_class.items()})
    results["hd95_mm"].setdefault(label, []).append({c: s["HD95"] for c, s in per_class.items()})
    print(f"seed {seed} {label}: {per_class}", flush=True)


def _cell(values: list[float]) -> str:
    """Mean +- standard deviation over the seeds; an undefined value (HD95 of a class neither predicted nor present is
    NaN) is left out and the cell says over how many seeds it is defined."""
    defined = [v for v in values if not math.isnan(v)]
    if not defined:
        return "undefined"
    suffix = "" if len(defined) == len(values) else f" ({len(defined)} of {len(values)} seeds)"
    if len(defined) == 1:
        return f"{defined[0]:.3f}{suffix}"
    return f"{statistics.fmean(defined):.3f} +- {statistics.stdev(defined):.3f}{suffix}"


if __name__ == "__main__":
    main()
