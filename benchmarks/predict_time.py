"""Prediction time per case, diffusion segmentation vs nnU-Net's baseline, timed in one process with the models
taking turns, so load from other jobs falls on both alike.

Both trained model folders are loaded once into nnU-Net's own ``nnUNetPredictor``. Each case is read once; then,
round after round, every model predicts every case with ``predict_single_npy_array`` (preprocessing, sliding
window, resampling back to the case's geometry: all of a prediction but process start-up and file I/O). The order
of the models is reversed every round. The time per case of a model is the median over rounds, summed over cases
and divided by their number; the ratio is of those sums.

    python benchmarks/predict_time.py --baseline RESULTS/NnugenBaselineTrainer__nnugenPlans__3d_fullres \
        --diffusion RESULTS/NnugenDiffSegTrainer__nnugenPlans__3d_fullres --images RAW/imagesTs [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from nnugen.models.diffusion_segmenter import DiffusionSegmenter
from nnugen.run.ext_trainer_path import ensure_ext_trainer_path


def load(folder: Path) -> nnUNetPredictor:
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                verbose_preprocessing=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), [0], checkpoint_name="checkpoint_final.pth")
    return predictor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="model folder of NnugenBaselineTrainer")
    parser.add_argument("--diffusion", type=Path, required=True, help="model folder of NnugenDiffSegTrainer")
    parser.add_argument("--images", type=Path, required=True, help="imagesTs-like folder of single-channel cases")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    ensure_ext_trainer_path()
    torch.set_num_threads(multiprocessing.cpu_count())
    baseline, diffusion = load(args.baseline), load(args.diffusion)
    segmenter = diffusion.network
    assert isinstance(segmenter, DiffusionSegmenter), f"{args.diffusion} is not a diffusion segmentation model"
    steps = segmenter.planned_sampler.steps
    # (name, predictor, sampler changes applied before it predicts)
    models = [("baseline", baseline, None), (f"diffusion {steps} steps", diffusion, {"steps": steps, "seeds": 1}),
              ("diffusion 1 step", diffusion, {"steps": 1, "seeds": 1}),
              (f"diffusion {steps} steps x 5 seeds", diffusion, {"steps": steps, "seeds": 5})]
    io = SimpleITKIO()
    cases = [io.read_images([str(path)]) for path in sorted(args.images.glob("*_0000.nii.gz"))]
    times: dict[str, list[list[float]]] = {name: [[] for _ in cases] for name, _, _ in models}
    for round_index in range(args.rounds):
        order = models if round_index % 2 == 0 else models[::-1]
        for case_index, (image, properties) in enumerate(cases):
            for name, predictor, changes in order:
                sampler = replace(segmenter.planned_sampler, **(changes or {}))
                start = time.perf_counter()
                with segmenter.sampling(sampler, seed=case_index):
                    predictor.predict_single_npy_array(image, properties)
                times[name][case_index].append(time.perf_counter() - start)
        print(f"round {round_index + 1}/{args.rounds} done", flush=True)

    per_case = {name: sum(statistics.median(t) for t in per) / len(cases) for name, per in times.items()}
    results = {"cases": len(cases), "rounds": args.rounds, "seconds_per_case": per_case,
               "ratio_to_baseline": {name: value / per_case["baseline"] for name, value in per_case.items()}}
    print("| model | s / case | ratio to baseline |\n| --- | --- | --- |")
    for name, value in per_case.items():
        print(f"| {name} | {value:.2f} | {results['ratio_to_baseline'][name]:.2f} |")
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
