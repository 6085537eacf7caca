"""What the ranks of a partitioned volume (``volume_partition``) send each other, point to point (torch.distributed
isend / irecv: gloo on the CPU, NCCL on CUDA). Tensors are (B, C, *extent) on each rank.

- ``add_halo_sums``: each rank sends the part of its sums that lies in a neighbour's owned box and adds what the
  neighbours send into its own; afterwards the sums on the owned box are complete.
- ``fill_halo``: each rank sends its owned values that lie in a neighbour's halo; afterwards the whole extent holds
  the owners' values.
- ``gather_volume``: rank 0 receives every owned box and returns the whole volume.

Every wait has a timeout; a neighbour that died or does not answer in time raises ``RankLost`` (a
``ConnectionError``), so no rank waits forever.
"""

from __future__ import annotations

from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from nnugen.diffusion.volume_partition import Box, VolumePartition

SUMS_TAG, FILL_TAG, GATHER_TAG = 1901, 1902, 1903


class RankLost(ConnectionError):
    """A neighbour of a partitioned volume died or did not answer within the timeout."""


def _region(box: Box, extent: Box) -> tuple[slice, ...]:
    return (slice(None), slice(None), *box.within(extent))


def _wait(works: list, rank: int, what: str, timeout: timedelta) -> None:
    try:
        for work in works:
            work.wait(timeout)
    except RuntimeError as error:  # gloo / NCCL: a closed connection or a timeout (DistBackendError included)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RankLost(f"rank {rank} lost its neighbours while exchanging {what} of the partitioned volume (a rank "
                       f"died or stalled for over {timeout.total_seconds():.0f} s): {first}") from error


def _exchange(tensor: Tensor, sends: list[tuple[int, Box]], receives: list[tuple[int, Box]], extent: Box, tag: int,
              rank: int, what: str, timeout: timedelta, combine) -> int:
    """Post every receive and send, wait for all, then ``combine(view, received)`` in rank order; bytes sent."""
    buffers = [(peer, box, torch.empty((*tensor.shape[:2], *box.shape), dtype=tensor.dtype, device=tensor.device))
               for peer, box in receives]
    works = [dist.irecv(buffer, src=peer, tag=tag) for peer, _, buffer in buffers]
    outgoing = [tensor[_region(box, extent)].contiguous() for _, box in sends]
    works += [dist.isend(data, dst=peer, tag=tag) for (peer, _), data in zip(sends, outgoing)]
    _wait(works, rank, what, timeout)
    for _, box, buffer in buffers:
        combine(tensor[_region(box, extent)], buffer)
    return sum(data.numel() * data.element_size() for data in outgoing)


def add_halo_sums(total: Tensor, partition: VolumePartition, rank: int, timeout: timedelta) -> int:
    """Complete ``total`` (this rank's sums on its extent) on its owned box with the neighbours' sums there; bytes
    sent."""
    me = partition.pieces[rank]
    others = [p for p in partition.pieces if p.rank != rank]
    sends = [(p.rank, box) for p in others if (box := me.extent.intersect(p.owned)) is not None]
    receives = [(p.rank, box) for p in others if (box := p.extent.intersect(me.owned)) is not None]
    return _exchange(total, sends, receives, me.extent, SUMS_TAG, rank, "halo sums", timeout,
                     lambda view, received: view.add_(received))


def fill_halo(values: Tensor, partition: VolumePartition, rank: int, timeout: timedelta) -> int:
    """Overwrite this rank's halo in ``values`` (on its extent) with the owners' values; bytes sent."""
    me = partition.pieces[rank]
    others = [p for p in partition.pieces if p.rank != rank]
    sends = [(p.rank, box) for p in others if (box := me.owned.intersect(p.extent)) is not None]
    receives = [(p.rank, box) for p in others if (box := p.owned.intersect(me.extent)) is not None]
    return _exchange(values, sends, receives, me.extent, FILL_TAG, rank, "halo values", timeout,
                     lambda view, received: view.copy_(received))


def gather_volume(values: Tensor, partition: VolumePartition, rank: int, timeout: timedelta) -> Tensor | None:
    """The whole volume (B, C, *volume) on rank 0, assembled from every rank's owned box; None on the others."""
    me = partition.pieces[rank]
    if rank != 0:
        _exchange(values, [(0, me.owned)], [], me.extent, GATHER_TAG, rank, "the result", timeout, None)
        return None
    everything = Box((0,) * len(partition.volume), partition.volume)
    whole = torch.empty((*values.shape[:2], *partition.volume), dtype=values.dtype, device=values.device)
    whole[_region(me.owned, everything)] = values[_region(me.owned, me.extent)]
    receives = [(p.rank, p.owned) for p in partition.pieces if p.rank != 0]
    _exchange(whole, [], receives, everything, GATHER_TAG, rank, "the result", timeout,
              lambda view, received: view.copy_(received))
    return whole
