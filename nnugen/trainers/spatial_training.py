"""Training on a patch split across the ranks of a torchrun job (``nnugen_train ... --partition Z Y X``; issue 19,
part 4): every rank trains on the same batch, each on its block of the patch (networks/spatial_partition.py), so the
whole job trains as one process would on the whole patch, with the activation memory of one block per rank.

The job is one spatial domain, not data parallel: rank 0's batch goes to every rank, the weights start as rank 0's,
and the weight gradients come out of backward already reduced over the blocks, so every rank steps its optimiser
identically without DDP. nnU-Net still runs its DDP bookkeeping (``is_ddp``): rank 0 writes the files, epoch losses
are gathered, the final validation's cases are split over the ranks, and those run unpartitioned.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist
from torch import nn

from nnugen.networks.spatial_partition import check_partition, domain_mesh, partition_ready, shard_spatial


class SpatialDomain(nn.Module):
    """The network of a partitioned run, in the place DDP would take: nnU-Net reaches the network through
    ``.module`` when ``is_ddp``; ``no_sync`` is there for gradient accumulation, which needs no sync here."""

    def __init__(self, module: nn.Module, mesh, pieces: tuple[int, ...]) -> None:
        super().__init__()
        self.module, self.mesh, self.pieces = module, mesh, pieces

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    def no_sync(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def shard_batch(self, data: torch.Tensor, target: torch.Tensor | list[torch.Tensor]):
        """Rank 0's batch, on every rank, as this rank's blocks of the data and of each target (deep supervision's
        coarser targets are cut into the same blocks)."""
        data = _from_rank_zero(data)
        if isinstance(target, list):
            return shard_spatial(data, self.mesh), [shard_spatial(_from_rank_zero(t), self.mesh) for t in target]
        return shard_spatial(data, self.mesh), shard_spatial(_from_rank_zero(target), self.mesh)


_GLOO_TYPES = (torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.uint8, torch.int8)


def _from_rank_zero(tensor: torch.Tensor) -> torch.Tensor:
    """Rank 0's tensor of the same shape and dtype (types gloo cannot send travel as float32 or int64)."""
    sent = tensor if tensor.dtype in _GLOO_TYPES else tensor.to(torch.float32 if tensor.is_floating_point()
                                                                   else torch.int64)
    sent = sent.contiguous()
    dist.broadcast(sent, src=0)
    return sent.to(tensor.dtype)


def spatial_domain(network: nn.Module, pieces: tuple[int, ...], patch_size: tuple[int, ...],
                   strides: list[list[int]], device: torch.device) -> SpatialDomain:
    """``network`` made ready for a partition of the patch into ``pieces`` blocks per spatial axis (one per rank),
    with rank 0's weights on every rank."""
    check_partition(pieces, patch_size, strides, dist.get_world_size())
    network = partition_ready(network, device)
    with torch.no_grad():
        for tensor in [*network.parameters(), *network.buffers()]:
            dist.broadcast(tensor.data, src=0)
    return SpatialDomain(network, domain_mesh(pieces, device), tuple(pieces))


def describe(pieces: tuple[int, ...], patch_size: tuple[int, ...], batch_size: int) -> str:
    block = " x ".join(str(size // count) for size, count in zip(patch_size, pieces))
    return (f"spatial partition over {math.prod(pieces)} ranks ({' x '.join(map(str, pieces))} pieces): every rank "
            f"trains on blocks of {block} voxels of the same batch of {batch_size}")
