"""Samplers on one trained diffusion segmentation model: Dice per class and prediction time per case.

Loads the model folder once into nnU-Net's ``nnUNetPredictor`` and predicts every held-out case with each sampler
setting (``predict_single_npy_array``: preprocessing, sliding window, resampling; the same seed per case for every
setting). Settings take turns within each case, so load from other jobs falls on all of them alike. Meant for
``NnugenDiffSegTrainer_T1000`` (1000 training timesteps), where DDPM at the training timesteps, DDIM and
DPM-Solver++ at few steps can be compared as in Efficient Diffusion Sampling.

    python benchmarks/sampler_comparison.py --model RESULTS/NnugenDiffSegTrainer_T1000__nnugenPlans__2d \
        --images RAW/imagesTs --labels RAW/labelsTs [--settings ddpm:1000 ddim:5 ddim:10 ...]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from predict_time import load  # the same loading as the prediction-time benchmark, next to this script

from nnugen.demo.phantom import LABELS
from nnugen.models.diffusion_segmenter import DiffusionSegmenter
from nnugen.run.ext_trainer_path import ensure_ext_trainer_path

DEFAULT_SETTINGS = ("ddpm:1000", "ddim:5", "ddim:10", "ddim:50", "dpm_solver++:5", "dpm_solver++:10",
                    "dpm_solver++:20")


def dice(predicted: np.ndarray, truth: np.ndarray, label: int) -> float:
    a, b = predicted == label, truth == label
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="model folder of a diffusion segmentation trainer")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--labels", type=Path, required=True)
    parser.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS), help="SAMPLER:STEPS, ...")
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    ensure_ext_trainer_path()
    torch.set_num_threads(multiprocessing.cpu_count())
    predictor = load(args.model)
    segmenter = predictor.network
    assert isinstance(segmenter, DiffusionSegmenter), f"{args.model} is not a diffusion segmentation model"
    settings = [(name, int(steps)) for name, steps in (s.rsplit(":", 1) for s in args.settings)]
    io = SimpleITKIO()
    classes = {name: value for name, value in LABELS.items() if value}
    seconds: dict[str, list[float]] = {f"{n} {k}": [] for n, k in settings}
    scores: dict[str, dict[str, list[float]]] = {f"{n} {k}": {c: [] for c in classes} for n, k in settings}
    for index, image_file in enumerate(sorted(args.images.glob("*_0000.nii.gz"))):
        image, properties = io.read_images([str(image_file)])
        truth = io.read_seg(str(args.labels / image_file.name.replace("_0000", "")))[0][0]
        order = settings if index % 2 == 0 else settings[::-1]
        for name, steps in order:
            sampler = replace(segmenter.planned_sampler, name=name, steps=steps, seeds=1)
            start = time.perf_counter()
            with segmenter.sampling(sampler, seed=index):
                predicted = predictor.predict_single_npy_array(image, properties)
            key = f"{name} {steps}"
            seconds[key].append(time.perf_counter() - start)
            for label_name, value in classes.items():
                scores[key][label_name].append(dice(predicted, truth, value))
        print(f"case {image_file.name} done", flush=True)

    rows = {}
    for key in seconds:
        per_class = {c: statistics.fmean(v) for c, v in scores[key].items()}
        rows[key] = {"dice": per_class, "mean_dice": statistics.fmean(per_class.values()),
                     "seconds_per_case": statistics.fmean(seconds[key])}
    print(f"| sampler, steps | {' | '.join(classes)} | mean | s / case |\n|---|" + "---|" * (len(classes) + 2))
    for key, row in rows.items():
        cells = " | ".join(f"{v:.3f}" for v in row["dice"].values())
        print(f"| {key} | {cells} | {row['mean_dice']:.3f} | {row['seconds_per_case']:.2f} |")
    if args.output is not None:
        args.output.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
