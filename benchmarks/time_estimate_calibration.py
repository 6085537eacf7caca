"""Calibrate the planner's cost model (nnugen_planner/time_estimate.py) on this machine: time training steps of
planned denoisers and divide the FLOPs the model counts for them by the measured seconds.

Each case is a denoiser the planner derives (``denoiser_from_arch``) from an nnU-Net-like network, built as the
trainers build it (``denoiser_network``), and trained for 2 warm-up + N timed steps on random data: forward, MSE,
backward, AdamW step, fp32, at the batch given. The cases take turns, so machine noise hits them alike. Prints, per
case, the median seconds per step, the FLOPs the cost model counts for that step, and their ratio, the effective
GFLOP/s that ``CPU_THROUGHPUT`` should hold.

    nice -n 19 python benchmarks/time_estimate_calibration.py [-n 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    name: str
    patch: tuple[int, ...]
    features: tuple[int, ...]
    channels: int
    batch: int
    residual: bool


CASES = (
    # the DDPM step of docs/benchmarks.md's generation table: 32^3, 32-256 features, joint image + 3 labels, batch 2
    Case("3D ddpm 32^3, 32-256, batch 2", (32, 32, 32), (32, 64, 128, 256), 4, 2, True),
    Case("3D segmentation-like 32^3 plain, 32-256, batch 2", (32, 32, 32), (32, 64, 128, 256), 4, 2, False),
    Case("2D ddpm 128^2, 32-512, batch 8", (128, 128), (32, 64, 128, 256, 512, 512), 4, 8, True),
    Case("3D ddpm 48x64x48, 32-320, batch 1", (48, 64, 48), (32, 64, 128, 256, 320), 2, 1, True),
)


def arch_of(case: Case) -> dict:
    """nnU-Net-style arch_kwargs: 3x3(x3) kernels, stride 1 then 2 on every axis."""
    dims = len(case.patch)
    n = len(case.features)
    return {"features_per_stage": list(case.features), "kernel_sizes": [[3] * dims] * n,
            "strides": [[1] * dims] + [[2] * dims] * (n - 1), "n_conv_per_stage": [2] * n,
            "n_conv_per_stage_decoder": [2] * (n - 1), "norm_op": "InstanceNorm"}


def build(case: Case):
    """(network, optimiser, x, t, target, FLOPs the cost model counts for one step)."""
    from dataclasses import replace

    import torch

    from nnugen.config import TaskSettings
    from nnugen.models.denoiser_from_settings import denoiser_network
    from nnugen_planner.denoiser_plan import denoiser_from_arch
    from nnugen_planner.memory import UNetShape
    from nnugen_planner.time_estimate import FLOPS_PER_MAC, forward_macs, passes_per_step

    denoiser = replace(denoiser_from_arch(arch_of(case), case.patch), residual_stages=case.residual)
    network = denoiser_network(TaskSettings(denoiser=denoiser), case.channels, case.channels)
    shape = UNetShape(case.channels, case.channels, case.patch, denoiser.features_per_stage, denoiser.kernel_sizes,
                      denoiser.strides, denoiser.n_conv_per_stage, denoiser.n_conv_per_stage_decoder)
    macs = forward_macs(shape, denoiser.attention_stages, denoiser.residual_stages)
    flops = FLOPS_PER_MAC * macs * passes_per_step() * case.batch
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(case.batch, case.channels, *case.patch, generator=generator)
    target = torch.randn(x.shape, generator=generator)
    t = torch.randint(0, 1000, (case.batch,), generator=generator)
    optimiser = torch.optim.AdamW(network.parameters(), lr=1e-4)
    return network, optimiser, x, t, target, flops


def step(network, optimiser, x, t, target) -> float:
    import torch

    start = time.perf_counter()
    optimiser.zero_grad(set_to_none=True)
    loss = torch.nn.functional.mse_loss(network(x, t), target)
    loss.backward()
    optimiser.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=5, help="timed steps per case (after 2 warm-up steps)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", type=int, nargs="+", default=list(range(len(CASES))), help="indices into CASES")
    args = parser.parse_args()
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    cases = [CASES[i] for i in args.cases]
    runs = {case.name: build(case) for case in cases}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for index in range(args.n + 2):
        for name, (network, optimiser, x, t, target, _) in runs.items():
            seconds = step(network, optimiser, x, t, target)
            if index >= 2:
                times[name].append(seconds)
    print(f"torch {torch.__version__}, {args.threads} threads, fp32, median of {args.n} steps")
    rates = []
    for name, (*_, flops) in runs.items():
        median = statistics.median(times[name])
        rates.append(flops / median / 1e9)
        print(f"{name:>52}: {median:7.3f} s per step (spread {min(times[name]):.3f}-{max(times[name]):.3f}), "
              f"{flops / 1e9:8.1f} GFLOP counted, {rates[-1]:6.1f} GFLOP/s effective")
    print(f"effective GFLOP/s over the cases: median {statistics.median(rates):.1f}, range {min(rates):.1f}-"
          f"{max(rates):.1f}")


if __name__ == "__main__":
    main()
