"""``LabelAdapter``: T2I-Adapter-style conditioning of a frozen denoiser on a label map (Mou et al. 2023).

A small convolutional network maps the label map's one-hot ``(B, K, *S)`` to one residual per encoder stage of the
denoiser, of that stage's width and resolution. The denoiser adds them to its encoder features
(``TimeConditionedUNet.forward(..., residuals=...)``). Unlike the T2I-Adapter paper, the last layer of every stage
starts at zero (as ControlNet's zero convolutions, Zhang et al. 2023): a new adapter returns zero residuals, so the
conditioned model starts as exactly the base model, and training moves away from it. The adapter does not see the
timestep (as in T2I-Adapter), so its residuals could be computed once per label map.

Built from widths and strides alone, so it fits any encoder with that layout, not only the DDPM's denoiser.

Example::

    >>> import torch
    >>> adapter = LabelAdapter(3, features_per_stage=(16, 32), strides=((1, 1), (2, 2)))
    >>> [tuple(r.shape) for r in adapter(torch.zeros(2, 3, 8, 8))]
    [(2, 16, 8, 8), (2, 32, 4, 4)]
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from nnugen.networks.nd_layers import conv_nd


class _AdapterStage(nn.Module):
    """Strided conv to the stage's resolution, one residual block, and a zero-initialised 1x1 conv to its width."""

    def __init__(self, in_channels: int, width: int, out_channels: int, kernel_size: Sequence[int],
                 stride: Sequence[int]) -> None:
        super().__init__()
        conv = conv_nd(len(kernel_size))
        padding = tuple(k // 2 for k in kernel_size)
        self.down = conv(in_channels, width, tuple(kernel_size), stride=tuple(stride), padding=padding)
        self.block = nn.Sequential(conv(width, width, tuple(kernel_size), padding=padding), nn.SiLU(),
                                   conv(width, width, tuple(kernel_size), padding=padding))
        self.activation = nn.SiLU()
        self.out = conv(width, out_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(features passed on to the next stage, residual for the denoiser's stage)."""
        h = self.activation(self.down(x))
        h = h + self.block(h)
        return h, self.out(h)


class LabelAdapter(nn.Module):
    """One-hot label map ``(B, in_channels, *S)`` -> residuals ``[(B, features_per_stage[s], *S_s)]``, where ``S_s``
    is ``S`` divided by the strides of stages 0 ... s (the denoiser's ``stage_shapes``).

    Args:
        in_channels: label channels K (the one-hot of the dataset's labels, background included).
        features_per_stage: the denoiser's encoder widths, one per stage.
        strides: the denoiser's stride of each stage's first conv, per axis.
        kernel_sizes: conv kernels per stage (odd); default 3 along every axis.
        width_divisor: the adapter's own width at stage s is ``max(8, features_per_stage[s] // width_divisor)``.
    """

    def __init__(self, in_channels: int, features_per_stage: Sequence[int], strides: Sequence[Sequence[int]],
                 kernel_sizes: Sequence[Sequence[int]] | None = None, width_divisor: int = 2) -> None:
        super().__init__()
        if in_channels < 1 or not features_per_stage or len(strides) != len(features_per_stage):
            raise ValueError(f"LabelAdapter needs in_channels >= 1 and one stride per stage; got in_channels="
                             f"{in_channels}, {len(features_per_stage)} widths, {len(strides)} strides")
        dim = len(strides[0])
        kernel_sizes = kernel_sizes or [(3,) * dim] * len(strides)
        if any(k % 2 == 0 for ks in kernel_sizes for k in ks):
            raise ValueError(f"kernel sizes must be odd, got {kernel_sizes}")
        stages, previous = [], in_channels
        for features, stride, kernel in zip(features_per_stage, strides, kernel_sizes):
            width = max(8, int(features) // width_divisor)
            stages.append(_AdapterStage(previous, width, int(features), kernel, stride))
            previous = width
        self.in_channels = in_channels
        self.stages = nn.ModuleList(stages)

    @classmethod
    def for_denoiser(cls, denoiser: nn.Module, in_channels: int, width_divisor: int = 2) -> LabelAdapter:
        """An adapter for a ``TimeConditionedUNet`` (or any encoder exposing ``features_per_stage``, ``strides`` and
        ``kernel_sizes``)."""
        return cls(in_channels, denoiser.features_per_stage, denoiser.strides, denoiser.kernel_sizes, width_divisor)

    def forward(self, label: Tensor) -> list[Tensor]:
        if label.shape[1] != self.in_channels:
            raise ValueError(f"label must be (B, {self.in_channels}, *S) (one-hot), got {tuple(label.shape)}")
        residuals, h = [], label
        for stage in self.stages:
            h, residual = stage(h)
            residuals.append(residual)
        return residuals
