"""Uncertainty that can be judged (issue 16 item 2): diffusion segmentation models' ensemble uncertainty against a
baseline nnU-Net's softmax, on the same held-out cases, through the real CLIs.

1. ``nnUNetv2_predict_from_modelfolder -m BASELINE --save_probabilities``, without and with nnU-Net's mirroring TTA
   (only without: ``--disable_tta``): segmentation + ``CASE.npz``;
2. for every ``--model`` and every ``--samplers`` entry, ``nnugen_predict -m MODEL --ensemble-size K
   --save-uncertainty --save_probabilities --seed S [--sampler --steps --eta --[no-]shared-first-step]``:
   segmentation + ``CASE_entropy`` / ``CASE_variance`` + ``CASE.npz`` (the ensemble's mean probabilities);
3. ``nnugen_evaluate -ref LABELS -pred ...`` on every folder: nnU-Net's ``summary.json`` and
   ``uncertainty_summary.json`` (AUROC / AUPRC of each uncertainty for the wrong voxels, pooled and mean over cases;
   ECE of the probabilities).

It prints one table (Dice, per-score AUROC / AUPRC, ECE) and writes WORK/uncertainty_benchmark.json with every
evaluation and command. A folder evaluated by an earlier, interrupted run is reused. Nothing is trained here: pass
trained model folders (the ones that hold ``fold_X``).

    python benchmarks/uncertainty_benchmark.py \
        --model scratch=RESULTS/.../NnugenDiffSegTrainer__nnugenPlans__2d warm=MODELS/warm_200 \
        --baseline RESULTS/.../NnugenBaselineTrainer__nnugenPlans__2d \
        --images imagesTs --labels labelsTs --work-dir /tmp/unc [-f 0] [--ensemble-size 5] [--steps 10] \
        [--samplers ddpm,5 ddim,5,0 ddim,5,1 ddpm,2,,shared] [--seed 0] [-device cuda]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def run(command: list[str]) -> float:
    """Run a command; on failure stop with its output tail. Returns the wall time in seconds (not a benchmark figure:
    process start-up is included)."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def _json_ready(value):
    """nnU-Net's summary.json may hold NaN (Dice of a label absent from reference and prediction): null here."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    return [_json_ready(item) for item in value] if isinstance(value, list) else value


def evaluate(labels: Path, predictions: Path, processes: int, seed: int) -> dict:
    run([sys.executable, "-m", "nnugen.entrypoints.evaluate", "-ref", str(labels), "-pred", str(predictions),
         "-np", str(processes), "--seed", str(seed)])
    return {"summary": json.loads((predictions / "summary.json").read_text(encoding="utf-8")),
            "uncertainty": json.loads((predictions / "uncertainty_summary.json").read_text(encoding="utf-8"))}


def table(results: dict[str, dict]) -> str:
    def number(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    lines = [f"{'model':<40} {'score':<9} {'Dice fg':>8} {'AUROC pooled':>12} {'AUPRC pooled':>12} {'AUROC mean':>10} "
             f"{'AUPRC mean':>10} {'ECE pooled':>10}  source"]
    for model, result in results.items():
        pooled, means = result["uncertainty"]["pooled"], result["uncertainty"]["mean_over_cases"]
        dice = result["summary"]["foreground_mean"]["Dice"]
        ece = pooled.get("ece", {}).get("value")
        for name in (n for n in ("entropy", "variance") if n in pooled):
            p, m = pooled[name], means[name]
            lines.append(f"{model:<40} {name:<9} {number(dice):>8} {number(p['auroc']):>12} {number(p['auprc']):>12} "
                         f"{number(m['auroc']):>10} {number(m['auprc']):>10} {number(ece):>10}  "
                         f"{', '.join(p['sources'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, nargs="+", metavar="[LABEL=]FOLDER",
                        help="diffusion segmentation model folder(s) (fold_X), each optionally labelled")
    parser.add_argument("--baseline", required=True, type=Path, help="nnU-Net baseline model folder (fold_X)")
    parser.add_argument("--images", required=True, type=Path, help="held-out images, CASE_XXXX<ending>")
    parser.add_argument("--labels", required=True, type=Path, help="their reference segmentations, CASE<ending>")
    parser.add_argument("--work-dir", required=True, type=Path)
    parser.add_argument("-f", nargs="+", default=["0"], help="folds (default 0)")
    parser.add_argument("--ensemble-size", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's plans)")
    parser.add_argument("--samplers", nargs="+", default=["plans"], metavar="NAME[,STEPS[,ETA[,shared]]]",
                        help="sampler settings to compare on every model, e.g. ddpm,5 ddim,5,0 ddim,5,1 ddpm,2,,shared "
                             "(shared: --shared-first-step; otherwise --no-shared-first-step) (default: the plans' "
                             "sampler with --steps)")
    parser.add_argument("--seed", type=int, default=0, help="prediction seed and pooled-sample seed (default 0)")
    parser.add_argument("--disable_tta", action="store_true", help="baseline only without mirroring (default: "
                                                                   "both with and without)")
    parser.add_argument("-device", default="cuda")
    parser.add_argument("-np", type=int, default=2, help="evaluation processes (default 2)")
    args = parser.parse_args(argv)

    work = args.work_dir
    commands: dict[str, list[str]] = {}
    for tta in ((False,) if args.disable_tta else (False, True)):
        label = "baseline, mirroring TTA" if tta else "baseline"
        commands[label] = [str(BIN / "nnUNetv2_predict_from_modelfolder"), "-i", str(args.images), "-o",
                           str(work / _folder(label)), "-m", str(args.baseline), "-f", *args.f,
                           "--save_probabilities", "-device", args.device, "-npp", "1", "-nps", "1",
                           "--disable_progress_bar", *(() if tta else ("--disable_tta",))]
    for entry in args.model:
        name, _, folder = entry.rpartition("=")
        for spec in args.samplers:
            label = f"{name or 'diffusion'}, {args.ensemble_size} seeds" + ("" if spec == "plans" else f", {spec}")
            command = [sys.executable, "-m", "nnugen.entrypoints.predict", "-i", str(args.images), "-o",
                       str(work / _folder(label)), "-m", folder, "-f", *args.f, "--ensemble-size",
                       str(args.ensemble_size), "--save-uncertainty", "--save_probabilities", "--seed", str(args.seed),
                       "-device", args.device, "-npp", "1", "-nps", "1", "--disable_progress_bar"]
            sampler, steps, eta, shared = ((spec.split(",") + [None] * 3)[:4] if spec != "plans"
                                           else (None, None, None, None))
            steps = steps or (str(args.steps) if args.steps is not None else None)
            command += [*(("--sampler", sampler) if sampler else ()), *(("--steps", steps) if steps else ()),
                        *(("--eta", eta) if eta else ()),
                        *(() if spec == "plans" else ("--shared-first-step" if shared == "shared"
                                                       else "--no-shared-first-step",))]
            commands[label] = command
    results = {}
    for label, command in commands.items():
        output = work / _folder(label)
        if not (output / "uncertainty_summary.json").is_file():  # kept from an interrupted run of this script
            run(command)
        results[label] = evaluate(args.labels, output, args.np, args.seed)
    print(table(results))
    output = work / "uncertainty_benchmark.json"
    from nnugen.atomic_files import atomic_write_json

    atomic_write_json(output, {"commands": commands, "results": _json_ready(results)})
    print(f"wrote {output}")
    return 0


def _folder(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label)


if __name__ == "__main__":
    raise SystemExit(main())
