"""What nnugen's two multi-octave noises share (``simplex_noise.py``, ``filtered_noise.py``): the checks of their
arguments and the last step, a standardisation per (sample, channel) to zero mean and unit variance over the spatial
axes, which ``q_sample`` (Ho et al. 2020 eq. 4) expects of the noise it mixes in.

Both follow AnoDDPM's octave recipe (Wyatt et al. 2022, CVPR workshops; Perlin 2002): octave k has ``2**k`` times the
spatial frequency of the coarsest and an amplitude ``persistence**k``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

DEFAULT_OCTAVES = 6  # AnoDDPM's default (Wyatt et al. 2022, their code's octave=6)
DEFAULT_PERSISTENCE = 0.8  # AnoDDPM's default amplitude factor per octave


def check_octave_arguments(shape: Sequence[int], octaves: int, persistence: float) -> None:
    """ValueError naming the fix for a shape that is not (B, C, *spatial) with 1 to 3 spatial axes, ``octaves`` < 1 or
    ``persistence`` outside (0, 1]."""
    if len(shape) < 3 or any(int(s) < 1 for s in shape):
        raise ValueError(f"shape must be (B, C, *spatial) with 1 to 3 positive spatial sizes, got {tuple(shape)}")
    if len(shape) > 5:
        raise ValueError(f"shape has {len(shape) - 2} spatial axes; use 1, 2 or 3 (B, C, *spatial), got {tuple(shape)}")
    if isinstance(octaves, bool) or not isinstance(octaves, int) or octaves < 1:
        raise ValueError(f"octaves must be an integer >= 1 (AnoDDPM uses 6), got {octaves!r}")
    if not 0 < persistence <= 1:
        raise ValueError(f"persistence must lie in (0, 1] (amplitude factor per octave, AnoDDPM 0.8), got "
                         f"{persistence}")


def standardise(field: Tensor) -> Tensor:
    """``field`` (B, C, *spatial) shifted and scaled to zero mean and unit (population) variance per (sample,
    channel); a constant field (one voxel, say) has no spread to normalise and becomes zeros."""
    axes = tuple(range(2, field.ndim))
    field = field - field.mean(dim=axes, keepdim=True)
    std = field.std(dim=axes, keepdim=True, unbiased=False)
    return torch.where(std > 0, field / std.clamp_min(1e-12), torch.zeros_like(field))
