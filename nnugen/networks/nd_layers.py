"""Layer classes chosen by spatial dimension, so that 1D, 2D and 3D networks share one code path.

The dimension of a network is ``len(kernel_sizes[0])``, as in nnU-Net's plans. Everything that depends on it
(convolution, transposed convolution, pooling, normalisation) is picked here and nowhere else.
"""

from torch import nn

NORM_KINDS = ("instance", "group", "batch")
"""Normalisations a time-conditioned block accepts (``norm=`` of the U-Net)."""

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_TRANSPOSE = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_AVG_POOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_INSTANCE_NORM = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}
_BATCH_NORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def _check_dim(dim: int) -> None:
    if dim not in _CONV:
        raise ValueError(f"spatial dimension must be 1, 2 or 3 (the length of each kernel size), got {dim}")


def conv_nd(dim: int) -> type[nn.Module]:
    """``nn.Conv{dim}d``."""
    _check_dim(dim)
    return _CONV[dim]


def conv_transpose_nd(dim: int) -> type[nn.Module]:
    """``nn.ConvTranspose{dim}d``."""
    _check_dim(dim)
    return _CONV_TRANSPOSE[dim]


def avg_pool_nd(dim: int) -> type[nn.Module]:
    """``nn.AvgPool{dim}d``."""
    _check_dim(dim)
    return _AVG_POOL[dim]


def group_count(channels: int, max_groups: int = 32) -> int:
    """Largest number of groups ``<= max_groups`` that divides ``channels`` (Wu & He 2018 use 32 groups)."""
    if channels < 1:
        raise ValueError(f"channels must be positive, got {channels}")
    return next(g for g in range(min(max_groups, channels), 0, -1) if channels % g == 0)


def norm_nd(kind: str, channels: int, dim: int) -> nn.Module:
    """Affine normalisation of ``channels`` feature maps of a ``dim``-D tensor ``(B, C, *spatial)``.

    Args:
        kind: ``"instance"`` (nnU-Net's default, eps 1e-5), ``"group"`` (GroupNorm with :func:`group_count`
            groups) or ``"batch"``.
        channels: number of channels C.
        dim: number of spatial axes.
    """
    _check_dim(dim)
    if kind == "instance":
        return _INSTANCE_NORM[dim](channels, eps=1e-5, affine=True)
    if kind == "group":
        return nn.GroupNorm(group_count(channels), channels, eps=1e-5, affine=True)
    if kind == "batch":
        return _BATCH_NORM[dim](channels, eps=1e-5, affine=True)
    raise ValueError(f"unknown norm {kind!r}; use one of {NORM_KINDS}")
