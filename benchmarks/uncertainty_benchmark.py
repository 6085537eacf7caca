"""Uncertainty that can be judged (issue 16 item 2): a diffusion segmentation model's ensemble uncertainty against a
baseline nnU-Net's softmax, on the same held-out cases, through the real CLIs.

1. ``nnUNetv2_predict_from_modelfolder -m BASELINE --save_probabilities`` (with nnU-Net's mirroring unless
   ``--disable_tta``): segmentation + ``CASE.npz``;
2. ``nnugen_predict -m MODEL --ensemble-size K --save-uncertainty --save_probabilities --seed S``: segmentation +
   ``CASE_entropy`` / ``CASE_variance`` + ``CASE.npz`` (the ensemble's mean probabilities);
3. ``nnugen_evaluate -ref LABELS -pred ...`` on both folders: nnU-Net's ``summary.json`` and
   ``uncertainty_summary.json`` (AUROC / AUPRC of each uncertainty for the wrong voxels, pooled and mean over cases;
   ECE of the probabilities).

It prints one table (Dice, per-score AUROC / AUPRC, ECE) and writes WORK/uncertainty_benchmark.json with both
evaluations and the commands. Nothing is trained here: pass trained model folders (the ones that hold ``fold_X``).

    python benchmarks/uncertainty_benchmark.py \
        --model RESULTS/Dataset.../NnugenDiffSegTrainer__nnugenPlans__3d_fullres \
        --baseline RESULTS/Dataset.../NnugenBaselineTrainer__nnugenPlans__3d_fullres \
        --images imagesTs --labels labelsTs --work-dir /tmp/unc [-f 0] [--ensemble-size 5] [--steps 10] \
        [--seed 0] [-device cuda]
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

    lines = [f"{'model':<10} {'score':<9} {'Dice fg':>8} {'AUROC pooled':>12} {'AUPRC pooled':>12} {'AUROC mean':>10} "
             f"{'AUPRC mean':>10} {'ECE pooled':>10}  source"]
    for model, result in results.items():
        pooled, means = result["uncertainty"]["pooled"], result["uncertainty"]["mean_over_cases"]
        dice = result["summary"]["foreground_mean"]["Dice"]
        ece = pooled.get("ece", {}).get("value")
        for name in (n for n in ("entropy", "variance") if n in pooled):
            p, m = pooled[name], means[name]
            lines.append(f"{model:<10} {name:<9} {number(dice):>8} {number(p['auroc']):>12} {number(p['auprc']):>12} "
                         f"{number(m['auroc']):>10} {number(m['auprc']):>10} {number(ece):>10}  "
                         f"{', '.join(p['sources'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="diffusion segmentation model folder (fold_X)")
    parser.add_argument("--baseline", required=True, type=Path, help="nnU-Net baseline model folder (fold_X)")
    parser.add_argument("--images", required=True, type=Path, help="held-out images, CASE_XXXX<ending>")
    parser.add_argument("--labels", required=True, type=Path, help="their reference segmentations, CASE<ending>")
    parser.add_argument("--work-dir", required=True, type=Path)
    parser.add_argument("-f", nargs="+", default=["0"], help="folds (default 0)")
    parser.add_argument("--ensemble-size", type=int, default=5)
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default: the model's plans)")
    parser.add_argument("--seed", type=int, default=0, help="prediction seed and pooled-sample seed (default 0)")
    parser.add_argument("--disable_tta", action="store_true", help="baseline without mirroring")
    parser.add_argument("-device", default="cuda")
    parser.add_argument("-np", type=int, default=2, help="evaluation processes (default 2)")
    args = parser.parse_args(argv)

    work = args.work_dir
    baseline_out, model_out = work / "baseline", work / "diffusion"
    baseline_command = [str(BIN / "nnUNetv2_predict_from_modelfolder"), "-i", str(args.images), "-o",
                        str(baseline_out), "-m", str(args.baseline), "-f", *args.f, "--save_probabilities",
                        "-device", args.device, "-npp", "1", "-nps", "1", "--disable_progress_bar"]
    if args.disable_tta:
        baseline_command.append("--disable_tta")
    model_command = [sys.executable, "-m", "nnugen.entrypoints.predict", "-i", str(args.images), "-o", str(model_out),
                     "-m", str(args.model), "-f", *args.f, "--ensemble-size", str(args.ensemble_size),
                     "--save-uncertainty", "--save_probabilities", "--seed", str(args.seed), "-device", args.device,
                     "-npp", "1", "-nps", "1", "--disable_progress_bar"]
    if args.steps is not None:
        model_command += ["--steps", str(args.steps)]
    run(baseline_command)
    run(model_command)
    results = {"baseline": evaluate(args.labels, baseline_out, args.np, args.seed),
               "diffusion": evaluate(args.labels, model_out, args.np, args.seed)}
    print(table(results))
    output = work / "uncertainty_benchmark.json"
    from nnugen.atomic_files import atomic_write_json

    atomic_write_json(output, {"commands": {"baseline": baseline_command, "diffusion": model_command},
                               "results": _json_ready(results)})
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
