"""DDIM sampling (Song et al. 2021), deterministic for eta = 0 and DDPM-like for eta = 1."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nnugen.diffusion import Denoiser, batch_timesteps, randn_like, step_alphas, working_dtype
from nnugen.diffusion.noise import Generators
from nnugen.samplers.signature import Callback


def ddim_sigma(abar_t: float, abar_s: float, eta: float) -> float:
    """Song et al. 2021 eq. 16: sigma_t(eta) = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s)."""
    return eta * math.sqrt((1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s))


def ddim_step(
    x_t: Tensor, x0_hat: Tensor, abar_t: float, abar_s: float, eta: float = 0.0, noise: Tensor | None = None
) -> Tensor:
    """Song et al. 2021 eq. 12: x_t -> x_s for the kept step s < t; x_t, x0_hat, noise (B, C, *spatial).

    Symbols: abar_t = alpha_t and abar_s = alpha_{t-1} in the paper's notation (cumulative), x0_hat = f_theta(x_t),
    eps_hat = epsilon_theta(x_t), sigma = sigma_t(eta), noise = epsilon_t. noise may be None when sigma = 0.
    """
    abar_t, abar_s = float(abar_t), float(abar_s)
    if not 0 < abar_t < abar_s <= 1:
        raise ValueError(f"need 0 < abar_t < abar_s <= 1 (s is a less noisy step), got {abar_t}, {abar_s}")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must lie in [0, 1] (0 deterministic DDIM, 1 DDPM-like), got {eta}")
    # A half-precision x0_hat (autocast) is promoted: the state x_s stays float32 (float64 stays float64).
    dtype = working_dtype(x_t, x0_hat)
    x_t, x0_hat = x_t.to(dtype), x0_hat.to(dtype)
    # 1. eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t), the noise the x0 estimate implies.
    eps_hat = (x_t - math.sqrt(abar_t) * x0_hat) / math.sqrt(1 - abar_t)
    # 2. sigma_t(eta), eq. 16.
    sigma = ddim_sigma(abar_t, abar_s, eta)
    # 3. "direction pointing to x_t": sqrt(1 - abar_s - sigma^2) eps_hat (clamped at 0 against rounding).
    direction = math.sqrt(max(1 - abar_s - sigma**2, 0.0)) * eps_hat
    # 4. x_s = sqrt(abar_s) x0_hat + direction + sigma epsilon_t.
    x_s = math.sqrt(abar_s) * x0_hat + direction
    if sigma == 0:
        return x_s
    if noise is None:
        raise ValueError("ddim_step needs noise (a standard normal tensor like x_t) when eta > 0 and abar_s < 1")
    return x_s + sigma * noise


@torch.no_grad()
def ddim(
    denoise: Denoiser,
    x: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor,
    *,
    generator: Generators = None,
    callback: Callback | None = None,
    eta: float = 0.0,
) -> Tensor:
    """Song et al. 2021 generalised sampler over `timesteps`; x (B, C, *spatial) -> clean sample."""
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must lie in [0, 1] (0 deterministic DDIM, 1 DDPM-like), got {eta}")
    pairs = step_alphas(alphas_cumprod, timesteps)
    # indices and alpha-bars are read on the host once, before the loop: no step waits for the device
    for i, (t, (abar_t, abar_s)) in enumerate(zip(timesteps.tolist(), pairs)):
        x0_hat = denoise(x, batch_timesteps(t, x))
        noise = randn_like(x, generator) if ddim_sigma(abar_t, abar_s, eta) > 0 else None
        x = ddim_step(x, x0_hat, abar_t, abar_s, eta, noise)
        if callback is not None:
            callback(i, x, x0_hat)
    return x
