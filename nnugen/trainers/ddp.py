"""What nnugen's trainers need from torch.distributed, on any backend (gloo on the CPU, NCCL on GPUs) and any
number of nodes. nnU-Net 2.8.1's own DDP assumes one node of GPUs: it puts rank R on ``cuda:R`` and wraps the
network with ``device_ids=[R]``. Here the device follows ``LOCAL_RANK`` (the rank within its node) and the wrap
follows the device, while the global rank (nnU-Net's ``local_rank`` attribute) still decides who writes files.

The collectives keep ranks in step: every rank must take the same decision (skip a non-finite step or not) or
the next gradient all-reduce waits forever."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def local_rank() -> int:
    """The rank within this node: torchrun's ``LOCAL_RANK``, else the global rank (nnU-Net's ``mp.spawn``, one node)."""
    value = os.environ.get("LOCAL_RANK")
    return int(value) if value not in (None, "") else dist.get_rank()


def rank_device(requested: torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for CUDA, else the requested device (gloo on the CPU)."""
    return torch.device("cuda", local_rank()) if requested.type == "cuda" else requested


def wrap_ddp(network: torch.nn.Module, device: torch.device, find_unused_parameters: bool) -> DistributedDataParallel:
    """DDP around the network, as nnU-Net wraps it but with device ids only for a CUDA device. DDP broadcasts rank
    0's weights here, so ranks seeded differently start from the same network."""
    if device.type == "cuda":
        network = torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)  # SyncBatchNorm is CUDA only
    return DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=find_unused_parameters)


def all_ranks_agree(flag: bool, device: torch.device) -> bool:
    """True when ``flag`` is true on every rank (the flag itself outside DDP)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor(int(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def _broadcast(tensors) -> None:
    if dist.is_available() and dist.is_initialized():
        for tensor in tensors:
            dist.broadcast(tensor.data, src=0)


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (for modules trained outside the DDP wrapper)."""
    _broadcast([*module.parameters(), *module.buffers()])


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (e.g. batch-norm statistics, which each rank updates from its own batch) to every rank,
    as DDP does for the modules it wraps."""
    _broadcast(list(module.buffers()))


def average_gradients(module: torch.nn.Module) -> None:
    """Average the gradients of a module trained outside the DDP wrapper over all ranks, as DDP does for its own."""
    if dist.is_available() and dist.is_initialized():
        world_size = dist.get_world_size()
        for parameter in module.parameters():
            if parameter.requires_grad:
                if parameter.grad is None:  # every rank must join every all-reduce
                    parameter.grad = torch.zeros_like(parameter)
                dist.all_reduce(parameter.grad, op=dist.ReduceOp.SUM)
                parameter.grad /= world_size


def mean_over_ranks(sums: dict[str, float], counts: dict[str, int]) -> dict[str, float]:
    """Means of values summed on each rank: key -> (sum over ranks) / (count over ranks). Ranks may hold different
    keys."""
    if dist.is_available() and dist.is_initialized():
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (sums, counts))
    else:
        gathered = [(sums, counts)]
    total: dict[str, float] = {}
    number: dict[str, int] = {}
    for rank_sums, rank_counts in gathered:
        for key, value in rank_sums.items():
            total[key] = total.get(key, 0.0) + value
            number[key] = number.get(key, 0) + rank_counts[key]
    return {key: total[key] / number[key] for key in sorted(total) if number[key] > 0}
