"""What nnugen's trainers need from torch.distributed, on any backend (gloo on the CPU, NCCL on GPUs) and any
number of nodes. nnU-Net 2.8.1's own DDP assumes one node of GPUs: it puts rank R on ``cuda:R`` and wraps the
network with ``device_ids=[R]``. Here the device follows ``LOCAL_RANK`` (the rank within its node) and the wrap
follows the device, while the global rank (nnU-Net's ``local_rank`` attribute) still decides who writes files.

The collectives keep ranks in step: every rank must take the same decision (skip a non-finite step or not) or
the next gradient all-reduce waits forever. Work that one rank would do while the others wait in a collective is
split instead (``rank_share`` / ``gather_on_rank_zero``): NCCL's watchdog ends a rank that waits ten minutes."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from nnugen.atomic_files import atomic_torch_save
from nnugen.trainers.world_batch import world_settings

T = TypeVar("T")
RANK_WEIGHTS_VARIABLE = "NNUGEN_RANK_WEIGHTS_DIR"
"""Tests and debugging: every DDP rank writes ``{"network": weights, "extra": extra_checkpoint_state()}`` at the end
of training to ``$NNUGEN_RANK_WEIGHTS_DIR/rank_R.pt``."""


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


def split_over_ranks(trainer) -> None:
    """An nnugen trainer's DDP set-up after nnU-Net's initialize ran as one process: nnU-Net asserts a global batch of
    at least one sample per rank, so the batch and accumulation are planned for the world size (world_batch.py) and
    nnU-Net splits the global batch with its own method; then the loss is rebuilt for DDP and the network wrapped."""
    trainer.settings, plan = world_settings(trainer.settings, dist.get_world_size())
    trainer.configuration_manager.configuration["batch_size"] = plan.global_batch
    trainer.num_iterations_per_epoch = trainer.settings.training.iterations_per_epoch * plan.grad_accumulation
    trainer.print_to_log_file(f"DDP over {plan.describe()}")
    trainer._set_batch_size_and_oversample()
    trainer.loss = trainer._build_loss()
    trainer.network = wrap_ddp(trainer.network, trainer.device, trainer.ddp_find_unused_parameters)


def gradient_sync(network: torch.nn.Module, is_ddp: bool, sync: bool) -> contextlib.AbstractContextManager:
    """DDP's ``no_sync`` on the micro-steps that only accumulate (nothing outside DDP or on the last one, ``sync``)."""
    if is_ddp and not sync:
        return network.no_sync()
    return contextlib.nullcontext()


def save_rank_weights(rank: int, state: Callable[[], dict]) -> None:
    """``state()`` (this rank's final weights) to ``$NNUGEN_RANK_WEIGHTS_DIR/rank_{rank}.pt`` when that is set."""
    folder = os.environ.get(RANK_WEIGHTS_VARIABLE)
    if folder:
        atomic_torch_save(state(), os.path.join(folder, f"rank_{rank}.pt"))


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


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_share(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items``: ``items[rank::world_size]`` (all of them outside DDP)."""
    rank, world = _rank_and_world()
    return list(items[rank::world])


def gather_on_rank_zero(share: dict, keys: Sequence) -> dict | None:
    """The shares of all ranks (``share`` holds this rank's ``rank_share(keys)``) merged on rank 0 in the order of
    ``keys``; None on the other ranks. Sent one entry per rank and round, so rank 0 holds at most one entry per rank
    in transit (anomaly maps are whole volumes); every rank joins every round."""
    rank, world = _rank_and_world()
    rounds = -(-len(keys) // world)
    if len(share) > rounds:
        raise ValueError(f"this rank holds {len(share)} entries but a share of {len(keys)} keys over {world} ranks "
                         f"has at most {rounds}; pass this rank's rank_share(keys)")
    if world == 1:
        return {key: share[key] for key in keys}
    entries = list(share.items())
    merged: dict = {}
    for index in range(rounds):
        received = [None] * world if rank == 0 else None
        dist.gather_object(entries[index] if index < len(entries) else None, received, dst=0)
        if rank == 0:
            merged.update(entry for entry in received if entry is not None)
    return {key: merged[key] for key in keys} if rank == 0 else None


def from_rank_zero(compute: Callable[[], T]) -> T:
    """``compute()`` run on rank 0 alone, its result sent to every rank (``compute()`` itself outside DDP). An error
    on rank 0 is raised on every rank, so none waits for a value that never comes."""
    rank, world = _rank_and_world()
    if world == 1:
        return compute()
    payload: list = [None]
    error = None
    if rank == 0:
        try:
            payload[0] = (True, compute())
        except Exception as caught:  # noqa: BLE001 - re-raised below, on every rank
            error = caught
            payload[0] = (False, f"{type(caught).__name__} on rank 0: {caught}")
    dist.broadcast_object_list(payload, src=0)
    ok, value = payload[0]
    if error is not None:
        raise error
    if not ok:
        raise RuntimeError(value)
    return value
