"""Prediction time per case, diffusion segmentation vs nnU-Net's baseline, timed in one process with the models
taking turns, so load from other jobs falls on both alike.

Both trained model folders are loaded once into nnU-Net's own ``nnUNetPredictor``. Each case is read once; then,
round after round, every model predicts every case with ``predict_single_npy_array`` (preprocessing, sliding
window, resampling back to the case's geometry: all of a prediction but process start-up and file I/O). The order
of the models is reversed every round. The time per case of a model is the median over rounds, summed over cases
and divided by their number; the ratio is of those sums.

    python benchmarks/predict_time.py --baseline RESULTS/NnugenBaselineTrainer__nnugenPlans__3d_fullres \
        --diffusion RESULTS/NnugenDiffSegTrainer__nnugenPlans__3d_fullres --images RAW/imagesTs [--rounds 5]

``--ensemble --labels RAW/labelsTs`` (issue 16, "an ensemble at nnU-Net's price") times instead, on the same cases
preprocessed once (preprocessing is left out of every mode alike): nnU-Net's baseline with and without mirroring TTA
(the plans' axes), the diffusion model's 5-seed ensemble (its planned steps) without uncertainty, with uncertainty in
one sliding window (moments_pass.py) and with uncertainty member by member (the old path, S windows). Each mode
predicts the logits and resamples them to a segmentation in the case's geometry, whose Dice against the label is
reported. It ends with the difference between the one-window and the member-by-member maps on the first case
mirror-padded to 1.6 times its width, so that tiles overlap.
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

from nnugen.inference.ensemble_prediction import predict_case
from nnugen.inference.moments_pass import moments_predictor
from nnugen.models.diffusion_segmenter import DiffusionSegmenter
from nnugen.run.ext_trainer_path import ensure_ext_trainer_path


def load(folder: Path, mirroring: bool = False) -> nnUNetPredictor:
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
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
    parser.add_argument("--ensemble", action="store_true", help="the issue-16 modes (see the module docstring)")
    parser.add_argument("--labels", type=Path, default=None, help="labelsTs-like folder, for Dice with --ensemble")
    parser.add_argument("--seeds", type=int, default=5, help="ensemble size with --ensemble")
    parser.add_argument("--extra", nargs="*", default=[], metavar="STEPS,SEEDS[,shared]",
                        help="with --ensemble, further modes: that many steps x seeds with uncertainty in one window "
                             "(e.g. 2,4: 8 network passes per tile, nnU-Net's 3D mirroring count; 2,4,shared: the "
                             "members share their first step, 5 passes)")
    args = parser.parse_args()

    ensure_ext_trainer_path()
    torch.set_num_threads(multiprocessing.cpu_count())
    if args.ensemble:
        ensemble_cost(args)
        return
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



def ensemble_cost(args) -> None:
    """The --ensemble benchmark: (mode -> seconds per case, Dice per case), modes taking turns in reversed order
    every round; the difference of the two uncertainty paths on an overlapping case."""
    import numpy as np
    from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

    baseline, baseline_tta, diffusion = load(args.baseline), load(args.baseline, True), load(args.diffusion)
    segmenter = diffusion.network
    assert isinstance(segmenter, DiffusionSegmenter), f"{args.diffusion} is not a diffusion segmentation model"
    window = moments_predictor(diffusion, segmenter)
    steps, seeds = segmenter.planned_sampler.steps, args.seeds
    io = SimpleITKIO()
    paths = sorted(args.images.glob("*_0000.nii.gz"))
    cases = []
    for path in paths:
        image, properties = io.read_images([str(path)])
        data, _, properties = diffusion.configuration_manager.preprocessor_class(verbose=False).run_case_npy(
            image, None, dict(properties), diffusion.plans_manager, diffusion.configuration_manager,
            diffusion.dataset_json)
        label = None
        if args.labels is not None:
            label = io.read_seg(str(args.labels / path.name.replace("_0000.nii.gz", ".nii.gz")))[0][0]
        cases.append((torch.from_numpy(data).float(), properties, label))

    def network_logits(predictor):
        return lambda data, seed: predictor.predict_logits_from_preprocessed_data(data)

    def ensemble(uncertainty: bool, one_window: bool):
        return lambda data, seed: predict_case(diffusion, segmenter, data, "case", seed, seeds, uncertainty,
                                               window if one_window else None).logits

    def smaller_ensemble(extra_steps: int, extra_seeds: int, shared: bool):
        def run(data, seed):
            with segmenter.sampling(replace(segmenter.planned_sampler, steps=extra_steps, shared_first_step=shared)):
                return predict_case(diffusion, segmenter, data, "case", seed, extra_seeds, True, window).logits
        return run

    members = f"diffusion {steps} steps x {seeds} seeds"
    modes = [("baseline, no TTA", baseline, network_logits(baseline)),
             ("baseline, mirroring TTA", baseline_tta, network_logits(baseline_tta)),
             (members, diffusion, ensemble(False, False)),
             (f"{members} + uncertainty, one window", diffusion, ensemble(True, True)),
             (f"{members} + uncertainty, member by member", diffusion, ensemble(True, False))]
    for extra in args.extra:
        extra_steps, extra_seeds, *kind = extra.split(",")
        shared = kind == ["shared"]
        if kind not in ([], ["shared"]):
            raise SystemExit(f"--extra {extra}: STEPS,SEEDS or STEPS,SEEDS,shared")
        modes.append((f"diffusion {extra_steps} steps x {extra_seeds} seeds + uncertainty, one window"
                      + (", shared first step" if shared else ""), diffusion,
                      smaller_ensemble(int(extra_steps), int(extra_seeds), shared)))
    labels = list(diffusion.label_manager.foreground_labels)
    times = {name: [[] for _ in cases] for name, _, _ in modes}
    dice: dict[str, list[float]] = {name: [float("nan")] * len(cases) for name, _, _ in modes}
    sampler = replace(segmenter.planned_sampler, steps=steps)
    with segmenter.sampling(sampler):
        for round_index in range(args.rounds):
            order = modes if round_index % 2 == 0 else modes[::-1]
            for case_index, (data, properties, truth) in enumerate(cases):
                for name, predictor, run in order:
                    start = time.perf_counter()
                    logits = run(data, case_index)
                    segmentation = convert_predicted_logits_to_segmentation_with_correct_shape(
                        logits.cpu(), predictor.plans_manager, predictor.configuration_manager,
                        predictor.label_manager, properties)
                    times[name][case_index].append(time.perf_counter() - start)
                    if truth is not None:
                        dice[name][case_index] = float(np.mean([_dice(segmentation == k, truth == k)
                                                                for k in labels]))
            print(f"round {round_index + 1}/{args.rounds} done", flush=True)
        difference = _overlap_difference(diffusion, segmenter, window, cases[0][0], seeds)

    per_case = {name: sum(statistics.median(t) for t in per) / len(cases) for name, per in times.items()}
    reference = per_case["baseline, mirroring TTA"]
    results = {"cases": len(cases), "rounds": args.rounds, "seeds": seeds, "steps": steps,
               "sampler": segmenter.planned_sampler.name, "mirror_axes": baseline_tta.allowed_mirroring_axes,
               "seconds_per_case": per_case, "ratio_to_baseline_tta": {n: v / reference for n, v in per_case.items()},
               "dice": {n: float(np.mean(d)) for n, d in dice.items()}, "overlap_difference": difference,
               "spread": {name: [min(t) for t in per] + [max(t) for t in per] for name, per in times.items()}}
    print("| mode | s / case | ratio to baseline with TTA | mean Dice |\n| --- | --- | --- | --- |")
    for name, value in per_case.items():
        print(f"| {name} | {value:.3f} | {results['ratio_to_baseline_tta'][name]:.2f} | {results['dice'][name]:.4f} |")
    print(json.dumps(difference, indent=2))
    if args.output is not None:
        args.output.write_text(json.dumps(results, indent=2))


def _dice(prediction, truth) -> float:
    both = prediction.sum() + truth.sum()
    return 1.0 if both == 0 else float(2 * (prediction & truth).sum() / both)


def _overlap_difference(predictor, segmenter, window, data: torch.Tensor, seeds: int) -> dict:
    """One-window maps against member-by-member maps on ``data`` mirror-padded along its last axis to 1.6 times
    its width (overlapping tiles); max and mean absolute differences, and the maps' own means for scale."""
    width = data.shape[-1]
    padded = torch.cat([data, data.flip(-1)[..., : int(0.6 * width)]], dim=-1).contiguous()
    one = predict_case(predictor, segmenter, padded, "case", 0, seeds, True, window)
    old = predict_case(predictor, segmenter, padded, "case", 0, seeds, True, None)
    result = {"shape": list(padded.shape)}
    for index, name in enumerate(("entropy", "variance")):
        delta = (one.maps[index] - old.maps[index]).abs()
        result[name] = {"max_abs_difference": float(delta.max()), "mean_abs_difference": float(delta.mean()),
                        "p99_abs_difference": float(delta.flatten().quantile(0.99)),
                        "mean_one_window": float(one.maps[index].mean()),
                        "mean_member_by_member": float(old.maps[index].mean())}
    result["mean_probability_max_abs_difference"] = float((one.logits.softmax(0) - old.logits.softmax(0)).abs().max())
    return result


if __name__ == "__main__":
    main()
