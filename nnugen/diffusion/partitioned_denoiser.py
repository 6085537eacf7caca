"""The windowed denoiser (``windowed_denoiser``, MultiDiffusion) with the windows of one volume shared among ranks:
each rank holds the sample on its extent (``volume_partition``), denoises its own windows, and at every call

1. adds the weighted x0 estimates of its windows on its extent (sums, and the importance weights of *all* windows
   over its owned box, which need no network);
2. sends the sums that fall in the neighbours' owned boxes and adds theirs (``halo_exchange.add_halo_sums``): its
   owned box now holds the exact sums over every window, and x0 = sums / weights there;
3. receives the owners' x0 on its halo (``halo_exchange.fill_halo``).

So every rank returns the whole volume's x0 estimate on its extent. A sampler's update is voxel-wise, so with noise
drawn per position (``positional_noise``) each rank's extent stays equal to the same region of a one-process run, to
the rounding of the sums' order. One piece (a 1-process partition) adds the windows in the windowed denoiser's own
order and gives its result bit for bit.
"""

from __future__ import annotations

import itertools
from datetime import timedelta

import torch
from torch import Tensor

from nnugen.diffusion.halo_exchange import add_halo_sums, fill_halo
from nnugen.diffusion.parameterisation import Denoiser
from nnugen.diffusion.volume_partition import Box, VolumePartition
from nnugen.diffusion.windowed_denoiser import WindowPlan


def partitioned_denoiser(denoise: Denoiser, partition: VolumePartition, rank: int, windows: WindowPlan,
                         timeout: timedelta, traffic: list[int] | None = None) -> Denoiser:
    """Wrap a patch denoiser ``denoise(x_t, t)`` (x_t (B, C, *patch)) into one for rank ``rank``'s extent
    (B, C, *extent) of ``partition``; ``windows`` must be the plan the partition was cut with. Each call appends the
    bytes this rank sent to ``traffic`` when given. Every rank must call it the same number of times."""
    me, patch = partition.pieces[rank], partition.patch
    norms: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def region(box: Box, outer: Box) -> tuple[slice, ...]:
        return (slice(None), slice(None), *box.within(outer))

    def owned_norm(weights: Tensor, starts) -> Tensor:
        """The importance weights of every window of the volume summed over the owned box, in the windowed
        denoiser's order."""
        norm = torch.zeros((1, 1, *me.owned.shape), device=weights.device, dtype=weights.dtype)
        for corner in itertools.product(*starts):
            window = Box(tuple(corner), tuple(c + p for c, p in zip(corner, patch)))
            common = window.intersect(me.owned)
            if common is not None:
                norm[region(common, me.owned)] += weights[region(common, window)]
        return norm

    def denoise_extent(x_t: Tensor, t: Tensor) -> Tensor:
        if tuple(x_t.shape[2:]) != me.extent.shape:
            raise ValueError(f"rank {rank} holds the extent {me.extent.shape} of the partitioned volume, got a "
                             f"sample of {tuple(x_t.shape[2:])}")
        if partition.volume == patch:
            return denoise(x_t, t)
        starts, weights = windows(partition.volume, patch, x_t.device)
        weights = weights.to(x_t.dtype).view(1, 1, *patch)
        key = (x_t.device, x_t.dtype)
        if key not in norms:
            norms[key] = owned_norm(weights, starts)
        total = torch.zeros_like(x_t)
        for corner in me.windows:
            window = region(Box(corner, tuple(c + p for c, p in zip(corner, patch))), me.extent)
            total[window] += denoise(x_t[window], t) * weights
        sent = add_halo_sums(total, partition, rank, timeout)
        owned = region(me.owned, me.extent)
        total[owned] /= norms[key]
        sent += fill_halo(total, partition, rank, timeout)
        if traffic is not None:
            traffic.append(sent)
        return total

    return denoise_extent
