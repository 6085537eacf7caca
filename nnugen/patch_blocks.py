"""Which blocks a training patch can be cut into for a spatial partition (issue 19, part 4), without torch: the rule
that ``networks/spatial_partition.check_partition`` enforces before a partitioned run, and the candidates the memory
planner tries when batch 1 does not fit one device (nnugen_planner/memory.py).

A U-Net on a block must downsample it exactly as it would the whole patch, so along each axis the patch must split
into ``pieces`` blocks whose size is a multiple of the product of that axis's strides.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence


def misaligned_axis(pieces: Sequence[int], patch_size: Sequence[int],
                    strides: Sequence[Sequence[int]]) -> str | None:
    """What is wrong with cutting ``patch_size`` into ``pieces`` blocks per axis for a network with ``strides``, as a
    sentence that says what to choose instead; None when every axis splits into aligned blocks."""
    for axis, (count, size) in enumerate(zip(pieces, patch_size)):
        stride = math.prod(int(s[axis]) for s in strides)
        if size % (count * stride):
            return (f"spatial axis {axis} of the patch ({size} voxels) does not split into {count} blocks of a "
                    f"multiple of {stride} voxels (the network's downsampling along it); choose pieces that divide "
                    f"{size // stride}")
    return None


def aligned_partitions(patch_size: Sequence[int], strides: Sequence[Sequence[int]],
                       max_blocks: int) -> list[tuple[int, ...]]:
    """Every partition of ``patch_size`` into 2 to ``max_blocks`` aligned blocks, fewest blocks first, and among
    equals the one whose blocks are closest to cubes in voxels (the least halo per voxel)."""
    per_axis = [[c for c in range(1, max_blocks + 1) if misaligned_axis((c,), (size,), [(s[axis],) for s in strides])
                 is None] for axis, size in enumerate(patch_size)]
    found = [p for p in itertools.product(*per_axis) if 1 < math.prod(p) <= max_blocks]

    def elongation(pieces: tuple[int, ...]) -> float:
        block = [size / count for size, count in zip(patch_size, pieces)]
        return max(block) / min(block)

    return sorted(found, key=lambda p: (math.prod(p), elongation(p), p))
