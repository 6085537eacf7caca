"""One time-conditioned convolution block: nnU-Net's conv -> norm -> LeakyReLU with AdaGN in between."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nnugen.networks.nd_layers import conv_nd, norm_nd


class ConditionedConvBlock(nn.Module):
    """``conv -> norm -> h * (1 + scale) + shift -> LeakyReLU(0.01) -> dropout``.

    The scale and shift come from the timestep embedding through ``SiLU -> Linear`` to ``2 * out_channels``:
    adaptive group normalisation ("AdaGN", Dhariwal & Nichol 2021, sec. 3), here applied after whichever norm
    the plan asks for. Conv and nonlinearity follow nnU-Net's ``ConvDropoutNormReLU`` (Isensee et al. 2021).
    Padding is ``k // 2`` per axis, so a stride-1 block keeps the spatial shape and a stride-``s`` block divides
    each axis by its ``s`` exactly (for odd kernels and sizes divisible by ``s``).

    Args:
        in_channels: channels of the input ``(B, in_channels, *spatial)``.
        out_channels: channels of the output.
        kernel_size: one odd size per spatial axis, e.g. ``(1, 3, 3)``.
        stride: one stride per spatial axis, e.g. ``(1, 2, 2)``.
        embed_dim: width of the timestep embedding ``(B, embed_dim)``.
        norm: ``"instance"``, ``"group"`` or ``"batch"``.
        dropout: drop probability after the nonlinearity (0 disables it).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        embed_dim: int,
        norm: str = "instance",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        dim = len(kernel_size)
        if len(stride) != dim:
            raise ValueError(f"kernel_size {tuple(kernel_size)} and stride {tuple(stride)} differ in length")
        if any(k % 2 == 0 for k in kernel_size):
            raise ValueError(f"kernel sizes must be odd to keep shapes, got {tuple(kernel_size)}")
        self.conv = conv_nd(dim)(
            in_channels,
            out_channels,
            tuple(kernel_size),
            stride=tuple(stride),
            padding=tuple(k // 2 for k in kernel_size),
        )
        self.norm = norm_nd(norm, out_channels, dim)
        self.scale_shift = nn.Sequential(nn.SiLU(), nn.Linear(embed_dim, 2 * out_channels))
        self.nonlin = nn.LeakyReLU(0.01)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """``x (B, C_in, *S), emb (B, E) -> (B, C_out, *S / stride)``."""
        h = self.norm(self.conv(x))
        scale, shift = self.scale_shift(emb).chunk(2, dim=1)
        shape = (*scale.shape, *([1] * (h.ndim - 2)))
        h = torch.addcmul(shift.view(shape), h, 1 + scale.view(shape))  # one fused pass: h * (1 + scale) + shift
        return self.dropout(self.nonlin(h))
