"""Denoising a volume larger than the training patch: at every sampler step the x0 estimate of the whole volume is
the Gaussian-weighted average of the estimates of overlapping patches (MultiDiffusion, Bar-Tal et al. 2023), so the
windows agree at every step instead of being stitched at the end. Any sampler works unchanged on the result.

Limits: each window sees only its own patch, so structures larger than the patch are kept consistent only through
the shared noisy sample; the cost grows with the number of windows per step.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from nnugen.diffusion.parameterisation import Denoiser


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of windows of length ``patch`` covering ``size`` with at least ``overlap`` (fraction) overlap."""
    if patch >= size:
        return [0]
    step = max(1, int(patch * (1 - overlap)))
    count = math.ceil((size - patch) / step) + 1
    return sorted({round(i * (size - patch) / (count - 1)) for i in range(count)})


def gaussian_weights(patch: Sequence[int], sigma_scale: float = 0.125,
                     device: torch.device | str | None = None) -> Tensor:
    """Gaussian importance map (1, 1, *patch) float32 peaking at the centre, floored so edges still count (as
    nnU-Net); built on ``device``, so a sampler step copies nothing from the host."""
    axes = [torch.exp(-0.5 * ((torch.arange(p, dtype=torch.float32, device=device) - (p - 1) / 2)
                              / max(p * sigma_scale, 1e-3)) ** 2)
            for p in patch]
    weights = axes[0]
    for axis in axes[1:]:
        weights = weights[..., None] * axis
    weights = weights / weights.max()
    return weights.clamp_min(1e-3).view(1, 1, *patch)


def windowed_denoiser(denoise: Denoiser, patch_size: Sequence[int], overlap: float = 0.5) -> Denoiser:
    """Wrap a patch denoiser ``denoise(x_t, t)`` (x_t (B, C, *patch)) into one for any larger (B, C, *spatial)."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must lie in [0, 1), got {overlap}")

    def denoise_volume(x_t: Tensor, t: Tensor) -> Tensor:
        spatial = x_t.shape[2:]
        if len(spatial) != len(patch_size):
            raise ValueError(f"a {len(spatial)}D sample for a {len(patch_size)}D patch {tuple(patch_size)}")
        if all(s <= p for s, p in zip(spatial, patch_size)) and tuple(spatial) == tuple(patch_size):
            return denoise(x_t, t)
        patch = [min(p, s) for p, s in zip(patch_size, spatial)]
        weights = gaussian_weights(patch, device=x_t.device).to(x_t.dtype)
        total = torch.zeros_like(x_t)
        norm = torch.zeros((1, 1, *spatial), device=x_t.device, dtype=x_t.dtype)
        starts = [window_starts(s, p, overlap) for s, p in zip(spatial, patch)]
        for corner in itertools.product(*starts):
            window = (slice(None), slice(None), *(slice(c, c + p) for c, p in zip(corner, patch)))
            total[window] += denoise(x_t[window], t) * weights
            norm[window] += weights
        return total / norm

    return denoise_volume
