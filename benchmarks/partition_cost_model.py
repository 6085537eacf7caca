"""The cost model of partitioned sampling (issue 19), fitted to CPU runs of ``partitioned_sampling.py`` and projected
to a 512 x 512 x 768 volume on the 8 GPUs of one node and on 2 nodes of 8.

Per sampler step the slowest rank sets the pace:

    t_step = W * t_window + m * latency + B / bandwidth

- W: the windows of the busiest rank, from nnugen's own partition arithmetic (``volume_partition.partition_volume``
  over nnU-Net's window starts): exact, not modelled. A cut along an axis with few window starts leaves ranks idle.
- t_window: seconds per denoiser pass over one window.
- m, B: the messages a rank sends per step and their bytes (the sums of its extent on a neighbour's owned box, and x0
  on its owned box that a neighbour's extent overlaps: the overlap's voxels x channels x 4 bytes each way).

Fitted here: t_window from the one-process run (its wall time / (windows x steps)); the overhead per step of the
partitioned run as the busiest rank's wall time minus its windows' compute, per step. That overhead holds the
exchange and all else a partition adds (the sums and copies on the extent, the final gather): with reports at two
halo sizes (``--channels``), the line through the two points gives a fixed cost per step and an effective bandwidth,
which on a small CPU run measure that bookkeeping more than the link; where the larger halo was not slower, the
bandwidth is not resolved (below the timing noise) and is reported so.

Projected (assumptions, not measurements: no GPU was lent to the session that wrote this): t_window = 2 FLOPs x the
planned 3D denoiser's multiply-accumulates at the patch (``nnugen_planner.time_estimate.forward_macs``, attention
included) / ``--tflops`` effective (default the planner's GPU assumption); ``--steps`` sampler steps of one pass
each (the planned DPM-Solver++ 2M); links: NVLink inside a node and InfiniBand between nodes, each with the latency
and bandwidth given (defaults stated in ``--help``).

    python benchmarks/partitioned_sampling.py --volume 32 96 32 --patch 16 16 16 --steps 4 | tail -1 > c1.json
    python benchmarks/partitioned_sampling.py --volume 32 96 32 --patch 16 16 16 --steps 4 --channels 16 \
        | tail -1 > c16.json
    python benchmarks/partition_cost_model.py --reports c1.json c16.json
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from nnugen.diffusion.volume_partition import VolumePartition, partition_volume
from nnugen_planner.denoiser_plan import denoiser_from_arch
from nnugen_planner.memory import UNetShape
from nnugen_planner.time_estimate import FLOPS_PER_MAC, GPU_THROUGHPUT, forward_macs


def window_starts(volume: tuple[int, ...], patch: tuple[int, ...]) -> list[list[int]]:
    """nnU-Net's window starts at its half-patch step."""
    from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

    return compute_steps_for_sliding_window(volume, patch, 0.5)


@dataclass(frozen=True)
class RankLoad:
    windows: int
    messages: int
    bytes_sent: int
    extent_voxels: int
    crossing_bytes: int
    """Of ``bytes_sent``, what goes to ranks on another node."""


def rank_loads(partition: VolumePartition, channels: int, ranks_per_node: int) -> list[RankLoad]:
    """What each rank computes and sends per sampler step."""
    loads = []
    for me in partition.pieces:
        messages = sent = crossing = 0
        for other in partition.pieces:
            if other.rank == me.rank:
                continue
            overlap = [me.extent.intersect(other.owned), other.extent.intersect(me.owned)]
            size = sum(box.voxels for box in overlap if box is not None) * channels * 4
            if size:
                messages += sum(box is not None for box in overlap)
                sent += size
                crossing += size if me.rank // ranks_per_node != other.rank // ranks_per_node else 0
        loads.append(RankLoad(len(me.windows), messages, sent, me.extent.voxels, crossing))
    return loads


def fit(reports: list[dict]) -> dict:
    """t_window, and latency / bandwidth of the exchange, from partitioned_sampling.py reports."""
    points = []
    for report in reports:
        one, steps = report["one_process"], report["steps"]
        t_window = one["wall_s"] / (one["windows"] * steps)
        busiest = max(report["partitioned"], key=lambda r: r["windows"])  # the others wait for it
        compute = busiest["windows"] * t_window
        overhead = (busiest["wall_s"] / steps) - compute
        sent = max(r["halo_bytes_per_step"] for r in report["partitioned"])
        points.append({"channels": report.get("channels", 1), "t_window_s": t_window,
                       "compute_s_per_step": compute, "overhead_s_per_step": overhead, "bytes_per_step": sent})
    result = {"points": points}
    if len(points) >= 2:
        ordered = sorted(points, key=lambda p: p["bytes_per_step"])
        a, b = ordered[0], ordered[-1]
        more_bytes = b["bytes_per_step"] - a["bytes_per_step"]
        more_time = b["overhead_s_per_step"] - a["overhead_s_per_step"]
        if more_time > 0 and more_bytes > 0:
            bandwidth = more_bytes / more_time
            result["effective_bandwidth_Bps"] = bandwidth
            result["fixed_s_per_step"] = a["overhead_s_per_step"] - a["bytes_per_step"] / bandwidth
        else:
            result["effective_bandwidth_Bps"] = None  # the larger halo was not slower: below the timing noise
            result["fixed_s_per_step"] = min(p["overhead_s_per_step"] for p in points)
    return result


def planned_denoiser_macs(patch: tuple[int, ...], channels: int) -> int:
    """MACs of one pass of the denoiser nnugen plans for nnU-Net's usual 3D CT network at ``patch`` (6 stages, 32 to
    320 features, 3x3x3 kernels, 2 convs per stage; attention where the planner puts it)."""
    arch = {"features_per_stage": [32, 64, 128, 256, 320, 320], "kernel_sizes": [[3, 3, 3]] * 6,
            "strides": [[1, 1, 1]] + [[2, 2, 2]] * 5, "n_conv_per_stage": [2] * 6,
            "n_conv_per_stage_decoder": [2] * 5}
    d = denoiser_from_arch(arch, patch)
    shape = UNetShape(channels, channels, patch, d.features_per_stage, d.kernel_sizes, d.strides, d.n_conv_per_stage,
                      d.n_conv_per_stage_decoder)
    return forward_macs(shape, d.attention_stages, d.residual_stages)


def projection(volume, patch, grid, channels, ranks_per_node, t_window, link, steps) -> dict:
    partition = partition_volume(volume, patch, window_starts(volume, patch), grid)
    loads = rank_loads(partition, channels, ranks_per_node)
    worst = max(loads, key=lambda load: load.windows)
    compute = worst.windows * t_window
    inside, between = link
    exchange = max(load.messages * (between if load.crossing_bytes else inside)["latency_s"]
                   + (load.bytes_sent - load.crossing_bytes) / inside["bandwidth_Bps"]
                   + load.crossing_bytes / between["bandwidth_Bps"] for load in loads)
    total_windows = sum(load.windows for load in loads)
    return {"grid": list(grid), "ranks": len(loads), "windows_total": total_windows,
            "windows_busiest_rank": worst.windows, "ideal_windows_per_rank": total_windows / len(loads),
            "compute_s_per_step": compute, "exchange_s_per_step": exchange,
            "seconds": steps * (compute + exchange), "largest_extent_voxels": max(load.extent_voxels for load in loads),
            "bytes_sent_per_step_busiest": max(load.bytes_sent for load in loads)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, nargs="*", default=[], help="partitioned_sampling.py JSON reports")
    parser.add_argument("--volume", type=int, nargs=3, default=[512, 512, 768])
    parser.add_argument("--patch", type=int, nargs=3, default=[128, 128, 128])
    parser.add_argument("--channels", type=int, default=2, help="sampled channels (image + label channels)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tflops", type=float, default=GPU_THROUGHPUT.tflops)
    link = ("LATENCY_S", "BYTES_PER_S")
    parser.add_argument("--nvlink", type=float, nargs=2, default=[10e-6, 150e9], metavar=link,
                        help="inside a node (default 10 us, 150 GB/s: NCCL point-to-point over H100 NVLink, assumed)")
    parser.add_argument("--infiniband", type=float, nargs=2, default=[20e-6, 40e9], metavar=link,
                        help="between nodes (default 20 us, 40 GB/s: one 400 Gb/s NDR link per GPU, assumed)")
    parser.add_argument("--grid", type=int, nargs=3, action="append", metavar=("Z", "Y", "X"),
                        help="project this partition instead of the four below (repeatable)")
    parser.add_argument("--gpus-per-node", type=int, default=8)
    args = parser.parse_args()

    report: dict = {}
    if args.reports:
        report["fit_on_this_cpu"] = fit([json.loads(path.read_text()) for path in args.reports])
    macs = planned_denoiser_macs(tuple(args.patch), args.channels)
    t_window = FLOPS_PER_MAC * macs / (args.tflops * 1e12)
    link = ({"latency_s": args.nvlink[0], "bandwidth_Bps": args.nvlink[1]},
            {"latency_s": args.infiniband[0], "bandwidth_Bps": args.infiniband[1]})
    volume, patch = tuple(args.volume), tuple(args.patch)
    report["assumptions"] = {"volume": list(volume), "patch": list(patch), "channels": args.channels,
                             "steps": args.steps, "denoiser_gmacs_per_window": macs / 1e9, "tflops": args.tflops,
                             "t_window_s": t_window, "nvlink": link[0], "infiniband": link[1]}
    grids = args.grid or [(1, 1, 1), (1, 1, 8), (1, 2, 4), (1, 2, 8)]  # 1 GPU, one node two ways, 2 nodes x 8
    report["projections"] = [projection(volume, patch, tuple(grid), args.channels, args.gpus_per_node, t_window, link,
                                        args.steps) for grid in grids]
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
