"""Building blocks of the autoencoder: normalisations, residual block, strided down- and nearest upsampling.

The decoder of an autoencoder uses only *local* layers (convolutions, per-voxel normalisation, nearest upsampling),
so that decoding overlapping latent tiles reproduces the whole decode exactly (see ``chunked_decoding.py``).
"""

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from nnugen.networks.nd_layers import conv_nd, norm_nd

AUTOENCODER_NORMS = ("group", "instance", "batch", "channel")
"""Normalisations the autoencoder's encoder accepts; the decoder always uses ``"channel"``."""


class ChannelLayerNorm(nn.Module):
    """Layer normalisation over the channels of each voxel separately (Ba et al. 2016; as in ConvNeXt, Liu et al.
    2022): ``(x - mean_c) / sqrt(var_c + eps) * weight + bias``, statistics over C only, at every position.

    Unlike GroupNorm or InstanceNorm it mixes no information across positions, so a voxel's output depends only on
    that voxel: the decoder stays a function with a finite receptive field, which chunked decoding relies on.

    Args:
        channels: C of ``(B, C, *spatial)``.
        eps: added to the variance.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, *spatial) -> (B, C, *spatial)``; statistics in float32, also under mixed precision."""
        h = x.float()
        mean = h.mean(dim=1, keepdim=True)
        var = h.var(dim=1, keepdim=True, unbiased=False)
        shape = (1, -1, *([1] * (x.ndim - 2)))
        h = (h - mean) * torch.rsqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)
        return h.to(x.dtype)


def autoencoder_norm(kind: str, channels: int, dim: int) -> nn.Module:
    """``"channel"`` -> :class:`ChannelLayerNorm`; ``"group"``, ``"instance"``, ``"batch"`` -> ``norm_nd``."""
    if kind == "channel":
        return ChannelLayerNorm(channels)
    if kind not in AUTOENCODER_NORMS:
        raise ValueError(f"unknown autoencoder norm {kind!r}; use one of {AUTOENCODER_NORMS}")
    return norm_nd(kind, channels, dim)


class ResidualBlock(nn.Module):
    """``x + conv(SiLU(norm(conv(SiLU(norm(x))))))`` with a 1x1 shortcut when the channels change.

    The pre-activation residual block of the LDM autoencoders (He et al. 2016; Rombach et al. 2022), with 3-wide
    kernels on every axis and padding 1, so the spatial shape is kept.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        dim: number of spatial axes.
        norm: one of :data:`AUTOENCODER_NORMS`.
    """

    def __init__(self, in_channels: int, out_channels: int, dim: int, norm: str) -> None:
        super().__init__()
        conv = conv_nd(dim)
        self.body = nn.Sequential(
            autoencoder_norm(norm, in_channels, dim),
            nn.SiLU(),
            conv(in_channels, out_channels, 3, padding=1),
            autoencoder_norm(norm, out_channels, dim),
            nn.SiLU(),
            conv(out_channels, out_channels, 3, padding=1),
        )
        self.shortcut = conv(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, *S) -> (B, C_out, *S)``."""
        return self.shortcut(x) + self.body(x)


class Downsample(nn.Module):
    """3-wide convolution with stride ``stride`` (per axis) and padding 1: divides each axis by its stride exactly
    when the size is a multiple of it; axes with stride 1 keep their size (anisotropic plans)."""

    def __init__(self, channels: int, stride: Sequence[int]) -> None:
        super().__init__()
        self.conv = conv_nd(len(stride))(channels, channels, 3, stride=tuple(stride), padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, *S) -> (B, C, *S / stride)``."""
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by ``stride`` (per axis), then a 3-wide convolution (Rombach et al. 2022).

    Nearest upsampling (rather than a transposed conv with overlapping kernels) keeps every output voxel a function
    of a fixed latent neighbourhood, aligned to whole latent voxels.
    """

    def __init__(self, channels: int, stride: Sequence[int]) -> None:
        super().__init__()
        self.scale = tuple(float(s) for s in stride)
        self.conv = conv_nd(len(stride))(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, *S) -> (B, C, *S * stride)``."""
        return self.conv(nn.functional.interpolate(x, scale_factor=self.scale, mode="nearest"))


def run_blocks(blocks: nn.Sequential, x: Tensor, activation_checkpointing: bool) -> Tensor:
    """Run ``blocks`` in order; with ``activation_checkpointing`` while training with gradients, recompute each
    block in the backward pass instead of storing its activations (Chen et al. 2016): same result, less memory."""
    for block in blocks:
        if activation_checkpointing and block.training and torch.is_grad_enabled():
            x = checkpoint(block, x, use_reentrant=False)
        else:
            x = block(x)
    return x
