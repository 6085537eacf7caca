"""One resolution stage of the time-conditioned U-Net: a residual stack of conditioned conv blocks."""

from collections.abc import Sequence

from torch import Tensor, nn

from nnugen.networks.attention import SpatialSelfAttention
from nnugen.networks.conditioned_block import ConditionedConvBlock
from nnugen.networks.nd_layers import avg_pool_nd, conv_nd


class ConditionedStage(nn.Module):
    """``n_convs`` :class:`ConditionedConvBlock` s (the first with ``stride``) plus a shortcut, then attention.

    The stride and kernel semantics are nnU-Net's (Isensee et al. 2021): the first conv downsamples by
    ``stride``, the others keep the shape. A shortcut around the whole stack (He et al. 2016) makes deep stages
    easy to train; when the stage downsamples or changes channels the shortcut is average pooling by ``stride``
    followed by a 1x1 conv, as in ResNet-D (He et al. 2019, "Bag of Tricks"), the shortcut nnU-Net's residual
    encoders use. With ``residual=False`` the stage is plain, as in nnU-Net's ``PlainConvUNet``: no shortcut, and
    less time per training step on a CPU, where a 1x1 conv at full resolution costs more than half a 3x3x3 conv
    (``benchmarks/train_step_profile.py``). Optional self-attention follows the (residual) sum.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        kernel_size: one odd size per spatial axis.
        stride: stride of the first conv, one per spatial axis.
        n_convs: number of conv blocks, at least 1.
        embed_dim: width of the timestep embedding.
        norm: ``"instance"``, ``"group"`` or ``"batch"``.
        dropout: drop probability inside the blocks.
        attention: append :class:`SpatialSelfAttention`.
        attention_heads: heads of that attention.
        residual: add the shortcut around the stack.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        n_convs: int,
        embed_dim: int,
        norm: str = "instance",
        dropout: float = 0.0,
        attention: bool = False,
        attention_heads: int = 1,
        residual: bool = True,
    ) -> None:
        super().__init__()
        if n_convs < 1:
            raise ValueError(f"a stage needs at least one conv, got n_convs={n_convs}")
        dim = len(kernel_size)
        ones = (1,) * dim
        self.blocks = nn.ModuleList(
            ConditionedConvBlock(
                in_channels if i == 0 else out_channels,
                out_channels,
                kernel_size,
                stride if i == 0 else ones,
                embed_dim,
                norm,
                dropout,
            )
            for i in range(n_convs)
        )
        self.shortcut = self._shortcut(in_channels, out_channels, stride, dim) if residual else None
        self.attention = SpatialSelfAttention(out_channels, attention_heads) if attention else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """``x (B, C_in, *S), emb (B, E) -> (B, C_out, *S / stride)``."""
        h = x
        for block in self.blocks:
            h = block(h, emb)
        if self.shortcut is not None:
            h = h + self.shortcut(x)
        return h if self.attention is None else self.attention(h)

    @staticmethod
    def _shortcut(in_channels: int, out_channels: int, stride: Sequence[int], dim: int) -> nn.Sequential:
        shortcut: list[nn.Module] = []
        if tuple(stride) != (1,) * dim:
            shortcut.append(avg_pool_nd(dim)(kernel_size=tuple(stride), stride=tuple(stride)))
        if in_channels != out_channels:
            shortcut.append(conv_nd(dim)(in_channels, out_channels, 1))
        return nn.Sequential(*shortcut)  # empty Sequential is the identity
