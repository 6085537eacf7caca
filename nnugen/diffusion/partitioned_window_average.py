"""nnU-Net's sliding-window prediction of one case with the windows shared among ranks (``volume_partition``): the
Gaussian-weighted average sum_j w_j f(tile_j) / sum_j w_j over all windows j, each window computed by one rank.

Every rank holds the whole input; rank r computes the windows of its piece and adds their weighted predictions, and
the weights themselves as one more channel, on its extent (float32, whatever precision the network runs in). Then

1. the sums that fall in the neighbours' owned boxes go to them (``halo_exchange.add_halo_sums``), so every owned box
   holds the sums and weights of *all* windows: the average is exact there;
2. rank 0 gathers the owned boxes (``halo_exchange.gather_volume``).

A window's prediction depends only on its tile, so the result does not depend on how the windows are cut among the
ranks, up to the order in which float32 sums are added. Every voxel of a rank's extent lies in one of its own
windows (window steps never exceed the patch), so the weights there are positive and the division is defined.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import torch
from torch import Tensor

from nnugen.diffusion.halo_exchange import add_halo_sums, gather_volume
from nnugen.diffusion.volume_partition import Box, VolumePartition


def partitioned_window_average(predict: Callable[[Tensor], Tensor], data: Tensor, partition: VolumePartition,
                               rank: int, weights: Tensor, timeout: timedelta,
                               progress: Callable[[], None] | None = None) -> Tensor | None:
    """The weighted average of ``predict`` over every window of ``partition``: (C_out, *volume) float32 on rank 0,
    None on the others.

    Args:
        predict: one tile (1, C_in, *patch) -> (1, C_out, *patch); every rank calls it for its own windows only.
        data: the whole input (C_in, *volume) on every rank, on the device the sums are kept on.
        partition: the windows of ``data`` cut among the ranks (``partition_volume``); ``partition.patch`` is the
            window shape.
        rank: this process's rank, the index of its piece.
        weights: the importance map w (*patch), positive everywhere (nnU-Net's Gaussian).
        timeout: how long a rank waits for its neighbours before ``halo_exchange.RankLost``.
        progress: called once after each window.
    """
    me, patch = partition.pieces[rank], partition.patch
    everything = Box((0,) * len(partition.volume), partition.volume)
    weights = weights.to(device=data.device, dtype=torch.float32)
    total = None  # (1, C_out + 1, *extent): weighted sums, then the weights
    for corner in me.windows:
        window = Box(tuple(corner), tuple(c + p for c, p in zip(corner, patch)))
        prediction = predict(data[(slice(None), *window.within(everything))][None]).float()
        if total is None:
            total = torch.zeros((1, prediction.shape[1] + 1, *me.extent.shape), dtype=torch.float32,
                                device=data.device)
        region = window.within(me.extent)
        total[(0, slice(0, -1), *region)] += prediction[0].to(data.device) * weights
        total[(0, -1, *region)] += weights
        if progress is not None:
            progress()
    add_halo_sums(total, partition, rank, timeout)
    average = total[:, :-1] / total[:, -1:]
    whole = gather_volume(average, partition, rank, timeout)
    return None if whole is None else whole[0]
