"""One volume sampled by 1 and by N gloo processes (issue 19): wall time and peak memory per rank, halo bytes per
sampler step, and the largest difference between the two volumes.

    nice -n 19 python benchmarks/partitioned_sampling.py --volume 32 48 32 --patch 16 16 16 --processes 2

The denoiser is an untrained 3-stage ``TimeConditionedUNet`` (seeded, 8-32 features) behind the windowed x0
estimate, sampled with DDPM (noise at every step) from positional noise; the processes are spawned with
torch.multiprocessing and joined by gloo, as ``nnugen_sample --partition`` joins torchrun's group."""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SEED = 0


def _network(channels: int, dims: int) -> torch.nn.Module:
    from nnugen.networks import TimeConditionedUNet

    torch.manual_seed(SEED)
    k, one, two = (3,) * dims, (1,) * dims, (2,) * dims
    return TimeConditionedUNet(channels, channels, features_per_stage=(8, 16, 32), kernel_sizes=(k, k, k),
                               strides=(one, two, two), n_conv_per_stage=(1, 1, 1),
                               n_conv_per_stage_decoder=(1, 1)).eval()


def _run(rank: int, world: int, volume, patch, grid, steps: int, channels: int):
    from nnugen.diffusion import alphas_cumprod, make_betas, sampling_timesteps
    from nnugen.diffusion.halo_exchange import gather_volume
    from nnugen.diffusion.noise import randn_like
    from nnugen.diffusion.partitioned_denoiser import partitioned_denoiser
    from nnugen.diffusion.positional_noise import PositionalNoise
    from nnugen.diffusion.volume_partition import partition_volume
    from nnugen.models.sliding_windows import nnunet_windows
    from nnugen.samplers import ddpm

    network = _network(channels, len(volume))

    def denoise(x, t):
        return torch.tanh(network(x, t.float()))

    abar = alphas_cumprod(make_betas("linear", 1000, 1e-4, 0.02)).double()
    timesteps = sampling_timesteps(1000, steps, spacing="uniform", alphas_cumprod=abar)
    partition = partition_volume(volume, patch, nnunet_windows(volume, patch)[0], grid)
    me = partition.pieces[rank]
    noise = PositionalNoise(SEED, tuple(volume), me.extent.lo)
    traffic: list[int] = []
    timeout = timedelta(seconds=600)
    before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    with torch.no_grad():
        x = randn_like(torch.empty(1, channels, *me.extent.shape), noise)
        x = ddpm(partitioned_denoiser(denoise, partition, rank, nnunet_windows, timeout, traffic), x, abar,
                 timesteps, generator=noise)
        whole = gather_volume(x, partition, rank, timeout)
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return whole, {"rank": rank, "wall_s": round(wall, 2), "peak_rss_mb": round(peak_mb, 1),
                   "peak_rss_growth_while_sampling_mb": round(peak_mb - before_mb, 1),
                   "extent": list(me.extent.shape), "owned": list(me.owned.shape), "windows": len(me.windows),
                   "halo_bytes_per_step": traffic[0] if traffic else 0}


def _worker(rank: int, world: int, folder: str, volume, patch, grid, steps, channels) -> None:
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world)
    try:
        whole, stats = _run(rank, world, volume, patch, grid, steps, channels)
        torch.save({"whole": whole, "stats": stats}, f"{folder}/w{world}_rank{rank}.pt")
    finally:
        if world > 1:
            dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volume", type=int, nargs="+", default=[32, 48, 32])
    parser.add_argument("--patch", type=int, nargs="+", default=[16, 16, 16])
    parser.add_argument("--grid", type=int, nargs="+", default=None, help="pieces per axis (default: N along axis 1)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--channels", type=int, default=1)
    args = parser.parse_args()
    grid = args.grid or [1, args.processes] + [1] * (len(args.volume) - 2)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for world, pieces in ((1, [1] * len(args.volume)), (args.processes, grid)):
            mp.start_processes(_worker, args=(world, folder, args.volume, args.patch, pieces, args.steps,
                                              args.channels), nprocs=world, join=True, start_method="spawn")
            results[world] = [torch.load(Path(folder) / f"w{world}_rank{r}.pt", weights_only=True)
                              for r in range(world)]
    one, many = results[1][0]["whole"], results[args.processes][0]["whole"]
    voxels, patch_voxels = torch.tensor(args.volume).prod().item(), torch.tensor(args.patch).prod().item()
    report = {"volume": args.volume, "patch": args.patch, "volume_over_patch_voxels": voxels / patch_voxels,
              "grid": grid, "steps": args.steps, "channels": args.channels, "threads_per_rank": 1,
              "one_process": results[1][0]["stats"],
              "partitioned": [r["stats"] for r in results[args.processes]],
              "max_abs_difference": float((one - many).abs().max()), "sample_std": float(one.std())}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
