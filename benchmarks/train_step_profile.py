"""Where a diffusion segmentation training step spends its time, next to nnU-Net's baseline on the same plan.

Builds both trainers as ``train_step_time.py`` does (one batch from each trainer's own data loader) and times,
taking turns and reporting medians:

- ``baseline step``: NnugenBaselineTrainer's ``train_step`` (nnU-Net's network, deep supervision, Dice + CE);
- ``diffusion step``: NnugenDiffSegTrainer's ``train_step`` (recycling, Dice + CE on the predicted mask);
- ``denoiser forward + backward``: the denoiser alone on a noisy mask, Dice + CE, without recycling;
- ``recycling pass``: the one extra forward without gradients that recycling (ImgX-DiffSeg) adds.

Then prints the most expensive operators of each network's forward + backward (torch.profiler, CPU time).

    python benchmarks/train_step_profile.py DATASET [-c 3d_fullres] [-n 6]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="dataset ID, planned and preprocessed with nnugen_plan")
    parser.add_argument("-c", default="3d_fullres")
    parser.add_argument("-n", type=int, default=6, help="timed repetitions per part (after one warm-up)")
    args = parser.parse_args()
    os.environ["nnUNet_results"] = tempfile.mkdtemp(prefix="nnugen_step_profile_")
    os.environ["nnUNet_n_proc_DA"] = "0"
    import torch
    from torch.profiler import ProfilerActivity, profile
    from train_step_time import build  # the same trainers and batches as the step-time benchmark

    from nnugen.diffusion import dice_ce_loss, one_hot
    from nnugen.diffusion.segmentation_space import mask_to_diffusion_space
    from nnugen.run.ext_trainer_path import ensure_ext_trainer_path

    ensure_ext_trainer_path()
    torch.manual_seed(0)
    baseline, baseline_batch = build("NnugenBaselineTrainer", args.dataset, args.c)
    diffusion, batch = build("NnugenDiffSegTrainer", args.dataset, args.c)
    segmenter = diffusion.network
    image = batch["data"]
    target_onehot = one_hot(batch["target"], diffusion.label_manager.num_segmentation_heads)
    x_t = mask_to_diffusion_space(target_onehot) + torch.randn_like(target_onehot)
    t = torch.zeros(image.shape[0], dtype=torch.long)

    def denoiser_step():
        dice_ce_loss(segmenter.model_output(image, x_t, t), target_onehot).backward()
        segmenter.zero_grad(set_to_none=True)

    def recycling_pass():
        with torch.no_grad():
            segmenter.model_output(image, x_t, t)

    parts = {"baseline step": lambda: baseline.train_step(baseline_batch),
             "diffusion step": lambda: diffusion.train_step(batch),
             "denoiser forward + backward": denoiser_step, "recycling pass": recycling_pass}
    times: dict[str, list[float]] = {name: [] for name in parts}
    for repetition in range(args.n + 1):
        for name, function in parts.items():
            start = time.perf_counter()
            function()
            if repetition > 0:
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"configuration {args.c}, patch {tuple(image.shape[2:])}, batch {image.shape[0]}, "
          f"torch threads {torch.get_num_threads()}")
    print("| part | s (median) | / baseline step |\n| --- | --- | --- |")
    for name, value in medians.items():
        print(f"| {name} | {value:.3f} | {value / medians['baseline step']:.2f} |")
    for name, function in (("baseline step", parts["baseline step"]), ("diffusion step", parts["diffusion step"])):
        with profile(activities=[ProfilerActivity.CPU]) as profiler:
            function()
        print(f"\n{name}: the most expensive operators (forward + backward + optimiser step)")
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
