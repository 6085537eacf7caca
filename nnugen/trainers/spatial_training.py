"""Training on a patch split across the ranks of a torchrun job (``nnugen_train ... --partition Z Y X``; issue 19,
part 4): every rank trains on the same batch with the same random draws, and the task's network runs on one block
of the patch per rank (networks/spatial_partition.py), so the job trains as one process would on the whole patch,
with one block's activations per rank.

The job is one spatial domain, not data parallel: rank 0's batch and random state go to every rank before each step
(so the timesteps and noise a diffusion loss draws are rank 0's), the weights start as rank 0's, and the weight
gradients come out of backward already reduced over the blocks, so every rank steps its optimiser identically without
DDP. nnU-Net still runs its DDP bookkeeping (``is_ddp``): rank 0 writes the files, epoch losses are gathered, and the
validation cases are split over the ranks, which run unpartitioned (the network is in eval mode then).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist
from torch import nn

from nnugen.networks.spatial_partition import check_partition, domain_mesh, partition_ready, run_partitioned


class SpatialDomain(nn.Module):
    """The model of a partitioned run, in the place DDP would take: nnU-Net reaches the model through ``.module``
    when ``is_ddp``; ``no_sync`` is there for gradient accumulation, which needs no sync here."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def no_sync(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


def spatial_domain(model: nn.Module, network: nn.Module, pieces: tuple[int, ...], patch_size: tuple[int, ...],
                   strides: list[list[int]], device: torch.device) -> SpatialDomain:
    """``model`` with its ``network`` (the model itself, or its denoiser) run on one block per rank of a patch cut
    into ``pieces`` per spatial axis, and with rank 0's weights on every rank."""
    check_partition(pieces, patch_size, strides, dist.get_world_size())
    partition_ready(network, device)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)
    run_partitioned(network, domain_mesh(pieces, device))
    return SpatialDomain(model)


_GLOO_TYPES = (torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.uint8, torch.int8)


def rank_zero_tensor(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Rank 0's tensor of the same shape, dtype and device. It travels on ``device`` (NCCL sends CUDA tensors only),
    and types gloo cannot send travel as float32 or int64."""
    sent = tensor if tensor.dtype in _GLOO_TYPES else tensor.to(torch.float32 if tensor.is_floating_point()
                                                                   else torch.int64)
    sent = sent.to(device).contiguous()
    dist.broadcast(sent, src=0)
    return sent.to(tensor.device, tensor.dtype)


def same_step_everywhere(data: torch.Tensor, target: torch.Tensor | list[torch.Tensor], device: torch.device):
    """Rank 0's batch for every rank, and rank 0's random state (CPU, and the rank's GPU), so the draws of the loss
    that follows (timesteps, noise) are rank 0's on every rank; rank 0's own stream is left as it is."""
    torch.set_rng_state(rank_zero_tensor(torch.get_rng_state(), device))
    if device.type == "cuda":
        torch.cuda.set_rng_state(rank_zero_tensor(torch.cuda.get_rng_state(device), device), device)
    if isinstance(target, list):
        return rank_zero_tensor(data, device), [rank_zero_tensor(t, device) for t in target]
    return rank_zero_tensor(data, device), rank_zero_tensor(target, device)


def describe(pieces: tuple[int, ...], patch_size: tuple[int, ...], batch_size: int, network: str) -> str:
    block = " x ".join(str(size // count) for size, count in zip(patch_size, pieces))
    return (f"spatial partition over {math.prod(pieces)} ranks ({' x '.join(map(str, pieces))} pieces): every rank "
            f"runs {network} on blocks of {block} voxels of the same batch of {batch_size}")
