"""Cutting one volume's sliding windows among processes (the spatial partition of Hou et al. 2019, "High Resolution
Medical Image Analysis with Spatial Partitioning", applied to the windowed denoiser): ``pieces`` per spatial axis,
rank r the row-major index of its piece in that grid.

Along each axis the window starts are split into ``pieces`` consecutive groups, as evenly as possible. A piece

- owns the voxels from its first window's start up to the next piece's first window's start (the last piece: to the
  end), so the owned boxes tile the volume;
- computes the windows of its groups (one group per axis);
- holds the sample on its extent: the owned box grown to the end of its last window. The part of the extent outside
  the owned box is the halo, owned by the neighbours.

A partition that leaves a piece without a window along an axis is refused: that piece would have nothing to compute.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Box:
    """The voxels lo <= index < hi along every spatial axis."""

    lo: tuple[int, ...]
    hi: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(h - lo for lo, h in zip(self.lo, self.hi))

    @property
    def voxels(self) -> int:
        return math.prod(self.shape)

    def intersect(self, other: Box) -> Box | None:
        """The common voxels, or None when there are none."""
        lo = tuple(max(a, b) for a, b in zip(self.lo, other.lo))
        hi = tuple(min(a, b) for a, b in zip(self.hi, other.hi))
        return Box(lo, hi) if all(h > lo_ for lo_, h in zip(lo, hi)) else None

    def within(self, outer: Box) -> tuple[slice, ...]:
        """Slices of this box in a tensor that holds ``outer`` (spatial axes only)."""
        return tuple(slice(lo - o, h - o) for lo, h, o in zip(self.lo, self.hi, outer.lo))


@dataclass(frozen=True)
class Piece:
    """One rank's share: the voxels it owns, the extent it holds, and the corners of the windows it computes."""

    rank: int
    owned: Box
    extent: Box
    windows: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class VolumePartition:
    volume: tuple[int, ...]
    patch: tuple[int, ...]
    grid: tuple[int, ...]
    """Pieces per spatial axis."""
    pieces: tuple[Piece, ...]
    """Indexed by rank."""

    @property
    def world_size(self) -> int:
        return len(self.pieces)


def _groups(count: int, pieces: int) -> list[range]:
    """``count`` items in ``pieces`` consecutive groups whose sizes differ by at most one."""
    return [range(g * count // pieces, (g + 1) * count // pieces) for g in range(pieces)]


def partition_volume(volume: Sequence[int], patch: Sequence[int], starts: Sequence[Sequence[int]],
                     grid: Sequence[int]) -> VolumePartition:
    """The pieces of ``volume`` for windows of ``patch`` starting at ``starts`` (per axis, increasing, the first at
    0, the last window ending at the volume's end), cut ``grid`` ways along the axes; ValueError for a grid with
    the wrong number of axes, fewer than 1 piece on an axis, or more pieces on an axis than it has windows."""
    volume, patch, grid = tuple(map(int, volume)), tuple(map(int, patch)), tuple(map(int, grid))
    if not len(grid) == len(volume) == len(patch) == len(starts):
        raise ValueError(f"--partition {' '.join(map(str, grid))}: give one number of pieces per spatial axis of the "
                         f"{len(volume)}d volume {volume}")
    if min(grid) < 1:
        raise ValueError(f"--partition {' '.join(map(str, grid))}: every axis needs at least 1 piece")
    for axis, (n, s, p, v) in enumerate(zip(grid, starts, patch, volume)):
        if n > len(s):
            raise ValueError(f"--partition {' '.join(map(str, grid))}: axis {axis} ({v} voxels) has only {len(s)} "
                             f"window(s) of the patch {p}, fewer than its {n} pieces; cut it into at most {len(s)} "
                             "pieces or sample a larger --size")
        if s[0] != 0 or s[-1] + p != v or any(b <= a for a, b in zip(s, s[1:])) or \
                any(b - a > p for a, b in zip(s, s[1:])):
            raise ValueError(f"window starts {list(s)} of patch {p} do not cover axis {axis} of {v} voxels")
    axis_spans = []  # per axis, per group: (owned lo, owned hi, extent hi, window starts)
    for n, s, p, v in zip(grid, starts, patch, volume):
        groups = _groups(len(s), n)
        spans = []
        for g, group in enumerate(groups):
            lo = s[group[0]]
            hi = s[groups[g + 1][0]] if g + 1 < n else v
            spans.append((lo, hi, max(hi, s[group[-1]] + p), [s[i] for i in group]))
        axis_spans.append(spans)
    pieces = []
    for rank, index in enumerate(itertools.product(*(range(n) for n in grid))):
        spans = [axis_spans[a][g] for a, g in enumerate(index)]
        owned = Box(tuple(sp[0] for sp in spans), tuple(sp[1] for sp in spans))
        extent = Box(owned.lo, tuple(sp[2] for sp in spans))
        pieces.append(Piece(rank, owned, extent, tuple(itertools.product(*(sp[3] for sp in spans)))))
    return VolumePartition(volume, patch, grid, tuple(pieces))
