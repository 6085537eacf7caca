"""Embedding of diffusion timesteps: sinusoids (Vaswani et al. 2017) followed by an MLP (Ho et al. 2020)."""

import math

import torch
from torch import Tensor, nn


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal position embedding of timesteps (Vaswani et al. 2017, sec. 3.5; as used by Ho et al. 2020).

    ``emb[:, i] = sin(t * f_i)`` and ``emb[:, half + i] = cos(t * f_i)`` with ``f_i = max_period ** (-i / half)``,
    ``half = dim // 2``. ``t`` is used as is (timestep indices, not rescaled to [0, 1]), so the fastest
    frequency is one radian per step and even ``t = 0..4`` (a 5-step schedule) give clearly distinct vectors.

    Args:
        t: timesteps, shape ``(B,)``, any real or integer dtype.
        dim: embedding width; an odd ``dim`` gets a zero last column.
        max_period: the slowest period, in steps.

    Returns:
        ``(B, dim)`` float tensor.
    """
    if t.ndim != 1:
        raise ValueError(f"t must have shape (B,), got {tuple(t.shape)}")
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / max(half, 1)
    args = t.float()[:, None] * torch.exp(exponent)[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """``t (B,) -> (B, embed_dim)``: sinusoids, then Linear -> SiLU -> Linear (Ho et al. 2020, appendix B).

    Args:
        sinusoid_dim: width of the sinusoidal embedding (guided-diffusion uses the first stage's channels).
        embed_dim: width of the output, read by every conditioned block.
    """

    def __init__(self, sinusoid_dim: int, embed_dim: int) -> None:
        super().__init__()
        if sinusoid_dim < 1 or embed_dim < 1:
            raise ValueError(f"embedding widths must be positive, got {sinusoid_dim} and {embed_dim}")
        self.sinusoid_dim = sinusoid_dim
        self.mlp = nn.Sequential(nn.Linear(sinusoid_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim))

    def forward(self, t: Tensor) -> Tensor:
        emb = sinusoidal_embedding(t, self.sinusoid_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))
