"""Reconstruction fidelity of an autoencoder: PSNR and SSIM (Wang et al. 2004) per image, with MONAI's metrics.

Both take ``(B, C, *spatial)`` tensors, 2D or 3D, and the intensity range ``data_range`` (2 for images in [-1, 1]).
PSNR of identical images is ``inf`` (the MSE is 0). SSIM's Gaussian window (11 voxels, sigma 1.5, as Wang et al.) is
shrunk to the largest odd size that fits the smallest axis, so small or thin patches work.
"""

from __future__ import annotations

import torch
from torch import Tensor


def psnr(reconstruction: Tensor, reference: Tensor, data_range: float) -> Tensor:
    """PSNR in dB per image, ``(B,)``: 20 log10(data_range) - 10 log10(MSE); ``inf`` where they are identical."""
    from monai.metrics import PSNRMetric

    _check_pair(reconstruction, reference)
    return PSNRMetric(max_val=data_range, reduction="none")(reconstruction.float(), reference.float()).flatten()


def ssim(reconstruction: Tensor, reference: Tensor, data_range: float) -> Tensor:
    """Mean SSIM per image, ``(B,)``, averaged over channels; 1 for identical images."""
    from monai.metrics import SSIMMetric

    _check_pair(reconstruction, reference)
    dims = reference.ndim - 2
    metric = SSIMMetric(spatial_dims=dims, data_range=data_range, win_size=window_size(reference.shape[2:]),
                        reduction="none")
    return metric(reconstruction.float(), reference.float()).reshape(reference.shape[0], -1).mean(dim=1)


def window_size(spatial: tuple[int, ...] | torch.Size, largest: int = 11) -> int:
    """The largest odd window <= ``largest`` that fits every axis; ValueError below 3 voxels."""
    smallest = min(int(n) for n in spatial)
    if smallest < 3:
        raise ValueError(f"SSIM needs at least 3 voxels along every axis, got {tuple(spatial)}")
    size = min(largest, smallest)
    return size if size % 2 else size - 1


def _check_pair(x: Tensor, y: Tensor) -> None:
    if x.shape != y.shape or x.ndim not in (4, 5):
        raise ValueError(f"expected two (B, C, *spatial) tensors of the same 2D or 3D shape, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
