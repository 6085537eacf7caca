"""Diversity of a set of images: the mean MS-SSIM (Wang et al. 2003) over all pairs, with MONAI's metric. Lower is
more diverse; compare with the same number computed on real images (as in Pinaya et al. 2022, brain LDM).

MONAI's MS-SSIM refuses images whose smallest axis is not above ``(kernel - 1) * (scales - 1) ** 2``, and every
scale halves the image, which the window must still fit. With its defaults (5 scales, window 11) that means at least
177 voxels per axis; ``ms_ssim_settings`` picks as many scales (at most 5, the first of Wang et al.'s weights,
renormalised) with a window of at least 7, then the largest window (at most 11); only images too small for that get
a smaller window. A 32^3 patch gets 3 scales and a window of 7, a 64^2 image 4 scales and a window of 7.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import torch
from torch import Tensor

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003


def ms_ssim_settings(spatial: Sequence[int]) -> tuple[int, tuple[float, ...]]:
    """(window size, scale weights) for images of ``spatial`` shape; ValueError if not even 2 scales fit."""
    smallest = min(int(n) for n in spatial)
    for least_window in (7, 3):  # windows below 7 voxels hold too few voxels for SSIM's local statistics
        for scales in range(len(WEIGHTS), 1, -1):
            for window in range(11, least_window - 1, -2):
                # MONAI's size check, and the window must fit the coarsest scale
                if smallest // (scales - 1) ** 2 > window - 1 and smallest // 2 ** (scales - 1) >= window:
                    weights = WEIGHTS[:scales]
                    return window, tuple(w / sum(weights) for w in weights)
    raise ValueError(f"images of shape {tuple(spatial)} are too small for MS-SSIM (2 scales need at least 6 voxels "
                     "along every axis)")


def ms_ssim(x: Tensor, y: Tensor, data_range: float) -> Tensor:
    """MS-SSIM per image pair, ``(B,)``, for ``(B, C, *spatial)`` tensors of the same shape."""
    from monai.metrics import MultiScaleSSIMMetric

    if x.shape != y.shape or x.ndim not in (4, 5):
        raise ValueError(f"expected two (B, C, *spatial) tensors of the same 2D or 3D shape, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    window, weights = ms_ssim_settings(x.shape[2:])
    metric = MultiScaleSSIMMetric(spatial_dims=x.ndim - 2, data_range=data_range, kernel_size=window, weights=weights,
                                  reduction="none")
    return metric(x.float(), y.float()).reshape(x.shape[0], -1).mean(dim=1)


def mean_pairwise_ms_ssim(images: Tensor, data_range: float) -> float:
    """Mean MS-SSIM over all pairs of a set ``(N, C, *spatial)``, N >= 2."""
    if images.shape[0] < 2:
        raise ValueError(f"diversity needs at least 2 images, got {images.shape[0]}")
    pairs = list(combinations(range(images.shape[0]), 2))
    first = torch.stack([images[i] for i, _ in pairs])
    second = torch.stack([images[j] for _, j in pairs])
    return float(ms_ssim(first, second, data_range).mean())
