"""Anomaly counterfactuals one at a time against batched (``anomaly.max_batch``): the time of ``AnomalySegmenter.run``
on one 2D tile, and how far apart the maps are.

    python benchmarks/anomaly_batching.py [--size 64] [--steps 20] [--seeds 4] [--max-batch 1 4 12] \
        [--repeats 3] [--threads N]

An untrained anomaly model with a 2D denoiser of the planner's shape (4 stages, 32-256 features), 3 strengths x
``--seeds`` seeds, DDIM ``--steps`` steps, on the device given (default: the CPU). After one warm-up run of each
setting, the settings take turns ``--repeats`` times; the best and the median time are printed. The weights do not
change the cost.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64, help="tile and patch edge length (2D)")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps per strength")
    parser.add_argument("--seeds", type=int, default=4, help="seeds per strength")
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 4, 12], help="anomaly.max_batch values")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)

    from dataclasses import replace

    import torch

    from nnugen.config import (
        AnomalySettings,
        ChannelIntensity,
        DenoiserSettings,
        DiffusionSettings,
        GenerationSettings,
        IntensitySettings,
        SamplerSettings,
        TaskSettings,
    )
    from nnugen.models.anomaly_segmenter import AnomalySegmenter
    from nnugen.models.image_generator import ImageGenerator

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    denoiser = DenoiserSettings(kernel_sizes=((3, 3),) * 4, strides=((1, 1),) + ((2, 2),) * 3)
    anomaly = AnomalySettings(strengths=(0.25, 0.5, 0.75))
    task = TaskSettings(denoiser=denoiser, diffusion=DiffusionSettings(schedule="cosine"),
                        sampler=SamplerSettings(steps=args.steps, seeds=args.seeds),
                        generation=GenerationSettings(mode="image"), anomaly=anomaly)
    generator = ImageGenerator.from_settings(task, 1, 2, (args.size, args.size))
    model = AnomalySegmenter(generator, anomaly, IntensitySettings(channels=(ChannelIntensity(),)), 2)
    model = model.to(args.device).eval()
    image = torch.randn(1, 1, args.size, args.size, generator=torch.Generator().manual_seed(1)).to(args.device)

    print(f"{platform.node()} {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}, {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"2D tile {args.size}x{args.size}, 3 strengths x {args.seeds} seeds, {args.steps} DDIM steps")
    def timed(max_batch: int) -> tuple[float, torch.Tensor]:
        model.anomaly = replace(model.anomaly, max_batch=max_batch)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        begin = time.perf_counter()
        result = model.run(image)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - begin, result.map

    maps = {max_batch: timed(max_batch)[1] for max_batch in args.max_batch}  # warm-up
    times: dict[int, list[float]] = {max_batch: [] for max_batch in args.max_batch}
    for _ in range(args.repeats):  # round robin, so load from other processes falls on every setting alike
        for max_batch in args.max_batch:
            times[max_batch].append(timed(max_batch)[0])
    reference = maps[args.max_batch[0]]
    for max_batch, runs in times.items():
        difference = float((maps[max_batch] - reference).abs().max())
        print(f"max_batch {max_batch:3d}: best {min(runs):7.3f} s, median {statistics.median(runs):7.3f} s of "
              f"{args.repeats} (all: {', '.join(f'{t:.2f}' for t in runs)}); max |map - map at max_batch "
              f"{args.max_batch[0]}| {difference:.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
