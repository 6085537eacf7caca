"""One decoder stage of the time-conditioned U-Net: upsample, concatenate the skip, conditioned stage."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nnugen.networks.conditioned_stage import ConditionedStage
from nnugen.networks.nd_layers import conv_transpose_nd


class DecoderStage(nn.Module):
    """Transposed conv (kernel = stride = ``upsample_stride``) -> concat skip -> :class:`ConditionedStage`.

    Mirrors a stage of nnU-Net's ``UNetDecoder`` (Isensee et al. 2021; U-Net, Ronneberger et al. 2015): the
    transposed conv undoes exactly the stride of the encoder stage below, and the stage maps
    ``2 * skip_channels`` back to ``skip_channels`` with the kernel of the encoder stage at this resolution.

    Args:
        below_channels: channels of the coarser input.
        skip_channels: channels of the skip connection, and of the output.
        kernel_size: conv kernel at this resolution, one odd size per axis.
        upsample_stride: stride of the encoder stage below, one per axis.
        n_convs: number of conv blocks.
        embed_dim: width of the timestep embedding.
        norm: ``"instance"``, ``"group"`` or ``"batch"``.
        dropout: drop probability inside the blocks.
        attention: append self-attention to the stage.
        attention_heads: heads of that attention.
        residual: a shortcut around the stage's convs (see :class:`ConditionedStage`).
    """

    def __init__(
        self,
        below_channels: int,
        skip_channels: int,
        kernel_size: Sequence[int],
        upsample_stride: Sequence[int],
        n_convs: int,
        embed_dim: int,
        norm: str = "instance",
        dropout: float = 0.0,
        attention: bool = False,
        attention_heads: int = 1,
        residual: bool = True,
    ) -> None:
        super().__init__()
        dim = len(kernel_size)
        self.upsample = conv_transpose_nd(dim)(
            below_channels, skip_channels, tuple(upsample_stride), stride=tuple(upsample_stride)
        )
        self.stage = ConditionedStage(
            2 * skip_channels,
            skip_channels,
            kernel_size,
            (1,) * dim,
            n_convs,
            embed_dim,
            norm,
            dropout,
            attention,
            attention_heads,
            residual,
        )

    def forward(self, x: Tensor, skip: Tensor, emb: Tensor) -> Tensor:
        """``x (B, C_below, *S / stride), skip (B, C_skip, *S), emb (B, E) -> (B, C_skip, *S)``."""
        return self.stage(torch.cat([self.upsample(x), skip], dim=1), emb)
