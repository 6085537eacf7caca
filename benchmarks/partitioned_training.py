"""What a patch split across processes costs in training (issue 19, part 4): nnU-Net's 3D PlainConvUNet with deep
supervision, nnU-Net's Dice + CE and SGD, one training step after another on the same random batch, in one process
on whole patches and in P gloo processes on blocks of them (networks/spatial_partition.py, PhysicsNeMo's
ShardTensor). Every process runs one thread. Reports the median seconds per step after one warm-up step, how far each
process's resident memory rises above its level between steps (the activations of a step: what the partition
divides; Linux's peak-RSS reset, /proc/self/clear_refs), the tensors autograd keeps for backward in one forward
(torch.autograd.graph.saved_tensors_hooks), and the halo bytes one
forward exchanges (conv inputs only; backward sends the same again), and checks that the loss agrees.

    python benchmarks/partitioned_training.py --patch 64 64 64 --features 32 64 128 256 --pieces 1 1 2 --steps 4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nnugen.networks.spatial_partition import domain_mesh, partition_ready, shard_spatial, whole


def _network(features: list[int], dim: int) -> nn.Module:
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    n = len(features)
    torch.manual_seed(0)
    return PlainConvUNet(1, n, features, nn.Conv3d if dim == 3 else nn.Conv2d, [[3] * dim] * n,
                         [[1] * dim] + [[2] * dim] * (n - 1), [2] * n, 3, [2] * (n - 1), conv_bias=True,
                         norm_op=nn.InstanceNorm3d if dim == 3 else nn.InstanceNorm2d,
                         norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
                         nonlin_kwargs={"inplace": True}, deep_supervision=True)


def _loss(levels: int):
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    weights = [1 / 2**i for i in range(levels)]
    weights[-1] = 0  # nnU-Net's: the coarsest output gets no weight
    total = sum(weights)
    return DeepSupervisionWrapper(DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False},
                                                 {}, weight_ce=1, weight_dice=1, ignore_label=None,
                                                 dice_class=MemoryEfficientSoftDiceLoss), [w / total for w in weights])


def _batch(patch: list[int], levels: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    data = torch.randn(2, 1, *patch, generator=generator)
    target = torch.randint(0, 3, (2, 1, *patch), generator=generator)
    return data, [target[(..., *(slice(None, None, 2**level),) * len(patch))] for level in range(levels)]


def _status_mb(field: str) -> float:
    """VmRSS (resident now) or VmHWM (its peak since the last reset) of this process, in MB (Linux)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _reset_peak() -> float:
    """Reset the peak resident memory to what is resident now (Linux's clear_refs 5) and return that."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
    return _status_mb("VmRSS")


def _train(network, loss, data, targets, steps: int, shard=lambda tensor: tensor) -> dict:
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, momentum=0.99, nesterov=True)
    before, times, losses = 0.0, [], []
    for step in range(steps + 1):  # the first step warms up (momentum buffers, PhysicsNeMo's lazy imports)
        if step == 1:
            before = _reset_peak()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        value = loss(network(shard(data)), [shard(t) for t in targets])
        value.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
        losses.append(float(whole(value).detach()))
    return {"seconds_per_step": statistics.median(times[1:]), "peak_rss_growth_mb": _status_mb("VmHWM") - before,
            "losses": losses}


def _saved_mb(network: nn.Module, data: torch.Tensor) -> float:
    """MB of the tensors autograd keeps for backward in one forward (each storage once; a ShardTensor's local part)."""
    storages: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        local = getattr(tensor, "to_local", lambda: tensor)()
        storage = local.untyped_storage()
        storages.setdefault(storage.data_ptr(), storage.nbytes())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        outputs = network(data)
    del outputs
    return sum(storages.values()) / 2**20


def _halo_bytes(network: nn.Module, pieces: list[int], patch: list[int], data: torch.Tensor) -> int:
    """Bytes one rank sends in one forward: for every 3x3x3 conv, one slice of its input per cut axis and side."""
    sizes: list[tuple[int, ...]] = []
    hooks = [m.register_forward_pre_hook(lambda m, args: sizes.append(tuple(args[0].shape)))
             for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)) and m.kernel_size[0] == 3]
    with torch.no_grad():
        network(data)
    for hook in hooks:
        hook.remove()
    total = 0
    for shape in sizes:
        for axis, count in enumerate(pieces):
            if count > 1:
                total += 4 * math.prod(shape) // shape[2 + axis]  # one slice across the cut, per side, 4 bytes
    return total


def _worker(rank: int, world: int, port: int, args: dict, folder: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        levels = len(args["features"]) - 1
        data, targets = _batch(args["patch"], levels)
        network = partition_ready(_network(args["features"], len(args["patch"])))
        mesh = domain_mesh(args["pieces"])
        result = _train(network, _loss(levels), data, targets, args["steps"], lambda t: shard_spatial(t, mesh))
        result["saved_for_backward_mb"] = _saved_mb(network, shard_spatial(data, mesh))
        with open(os.path.join(folder, f"rank_{rank}.json"), "w") as file:
            json.dump(result, file)
    finally:
        dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, nargs="+", default=[64, 64, 64])
    parser.add_argument("--features", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--pieces", type=int, nargs="+", default=[1, 1, 2])
    parser.add_argument("--steps", type=int, default=4)
    args = vars(parser.parse_args())
    world = math.prod(args["pieces"])
    levels = len(args["features"]) - 1

    torch.set_num_threads(1)
    data, targets = _batch(args["patch"], levels)
    network = _network(args["features"], len(args["patch"]))
    single = _train(network, _loss(levels), data, targets, args["steps"])
    single["saved_for_backward_mb"] = _saved_mb(network, data)
    halo = _halo_bytes(_network(args["features"], len(args["patch"])), args["pieces"], args["patch"], data)
    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(_worker, args=(world, 29500 + os.getpid() % 2000, args, folder), nprocs=world, join=True,
                           start_method="spawn")
        ranks = [json.load(open(os.path.join(folder, f"rank_{rank}.json"))) for rank in range(world)]
    report = {"settings": args, "one_process": single, "ranks": ranks, "halo_bytes_per_forward_per_rank": halo,
              "first_loss_relative_difference": abs(ranks[0]["losses"][0] - single["losses"][0])
              / abs(single["losses"][0])}
    print(json.dumps(report, indent=2))
    print(f"| | 1 process | {world} processes ({' x '.join(map(str, args['pieces']))}), per rank |")
    print("| --- | --- | --- |")
    for label, key, digits in (("s / step", "seconds_per_step", 2), ("peak RSS growth, MB", "peak_rss_growth_mb", 0),
                               ("saved for backward, MB", "saved_for_backward_mb", 0)):
        per_rank = " / ".join(f"{r[key]:.{digits}f}" for r in ranks)
        print(f"| {label} | {single[key]:.{digits}f} | {per_rank} |")


if __name__ == "__main__":
    main()
