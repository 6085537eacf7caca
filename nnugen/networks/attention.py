"""Multi-head self-attention over all spatial positions of a feature map (Vaswani et al. 2017)."""

import torch
from torch import Tensor, nn

from nnugen.networks.nd_layers import group_count


class SpatialSelfAttention(nn.Module):
    """``x + proj(attention(GroupNorm(x)))`` over the flattened positions of ``(B, C, *spatial)``.

    As in the attention blocks of Ho et al. 2020 and Dhariwal & Nichol 2021 (multi-head, output projection
    initialised to zero so that the block starts as the identity). Uses
    ``torch.nn.functional.scaled_dot_product_attention``, which picks a fused kernel where one exists; the cost
    grows with the square of the number of positions, so use it at the coarse stages.

    Args:
        channels: C, divisible by ``heads``.
        heads: number of attention heads.
    """

    def __init__(self, channels: int, heads: int = 1) -> None:
        super().__init__()
        if heads < 1 or channels % heads:
            raise ValueError(f"attention heads ({heads}) must be positive and divide the channels ({channels})")
        self.heads = heads
        self.norm = nn.GroupNorm(group_count(channels), channels, eps=1e-5, affine=True)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, *spatial) -> (B, C, *spatial)``."""
        b, c = x.shape[:2]
        tokens = self.norm(x).reshape(b, c, -1).transpose(1, 2)  # (B, N, C)
        q, k, v = self.qkv(tokens).reshape(b, -1, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        h = torch.nn.functional.scaled_dot_product_attention(q, k, v)  # (B, heads, N, C / heads)
        h = self.proj(h.transpose(1, 2).reshape(b, -1, c))
        return x + h.transpose(1, 2).reshape(x.shape)
