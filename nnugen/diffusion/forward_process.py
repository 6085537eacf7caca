"""The forward (noising) process q(x_t | x_0)."""

from __future__ import annotations

from torch import Tensor

from nnugen.diffusion.broadcast import schedule_at


def q_sample(x0: Tensor, t: Tensor, alphas_cumprod: Tensor, noise: Tensor) -> Tensor:
    """Ho et al. 2020 eq. 4: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps; x0, noise (B, C, *spatial), t (B,) long."""
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} must equal x0 shape {tuple(x0.shape)}")
    abar_t = schedule_at(alphas_cumprod, t, x0)
    return abar_t.sqrt() * x0 + (1 - abar_t).sqrt() * noise
