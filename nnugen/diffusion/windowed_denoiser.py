"""Denoising a volume larger than the training patch: at every sampler step the x0 estimate of the whole volume is
the importance-weighted average of the estimates of overlapping patches (MultiDiffusion, Bar-Tal et al. 2023), so the
windows agree at every step instead of being stitched at the end. Any sampler works unchanged on the result.

Where the windows start and how each is weighted is the caller's ``windows`` plan: nnugen's models pass nnU-Net's own
sliding-window rule and Gaussian importance map (``nnugen.models.sliding_windows``), so a volume is tiled as
nnU-Net's predictor tiles it. This module stays free of nnunetv2 (math code).

Limits: each window sees only its own patch, so structures larger than the patch are kept consistent only through
the shared noisy sample; the cost grows with the number of windows per step.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from nnugen.diffusion.parameterisation import Denoiser

WindowPlan = Callable[[Sequence[int], Sequence[int], torch.device], tuple[Sequence[Sequence[int]], Tensor]]
"""``windows(spatial, patch, device) -> (starts, weights)``: the start index of every window along each axis of a
volume ``spatial``, for windows of size ``patch`` (each <= spatial), and the importance weights (*patch), > 0, on
``device``."""


def windowed_denoiser(denoise: Denoiser, patch_size: Sequence[int], windows: WindowPlan) -> Denoiser:
    """Wrap a patch denoiser ``denoise(x_t, t)`` (x_t (B, C, *patch)) into one for any larger (B, C, *spatial); an
    axis shorter than the patch gets one window of its own length."""

    def denoise_volume(x_t: Tensor, t: Tensor) -> Tensor:
        spatial = tuple(x_t.shape[2:])
        if len(spatial) != len(patch_size):
            raise ValueError(f"a {len(spatial)}D sample for a {len(patch_size)}D patch {tuple(patch_size)}")
        if spatial == tuple(patch_size):
            return denoise(x_t, t)
        patch = [min(p, s) for p, s in zip(patch_size, spatial)]
        starts, weights = windows(spatial, patch, x_t.device)
        weights = weights.to(x_t.dtype).view(1, 1, *patch)
        total = torch.zeros_like(x_t)
        norm = torch.zeros((1, 1, *spatial), device=x_t.device, dtype=x_t.dtype)
        for corner in itertools.product(*starts):
            window = (slice(None), slice(None), *(slice(c, c + p) for c, p in zip(corner, patch)))
            total[window] += denoise(x_t[window], t) * weights
            norm[window] += weights
        return total / norm

    return denoise_volume
