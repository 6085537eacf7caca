"""DDPM ancestral sampling (Ho et al. 2020) on respaced timesteps (Nichol & Dhariwal 2021 sec. 4)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nnugen.diffusion import Denoiser, batch_timesteps, randn_like, step_alphas, working_dtype
from nnugen.diffusion.noise import Generators
from nnugen.samplers.signature import Callback


def ddpm_step(x_t: Tensor, x0_hat: Tensor, abar_t: float, abar_s: float, noise: Tensor | None = None) -> Tensor:
    """Ho et al. 2020 eq. 6-7: draw x_s ~ q(x_s | x_t, x0_hat) for the kept step s < t; x_t, x0_hat (B, C, *spatial).

    Symbols: abar_t = alpha-bar_t, abar_s = alpha-bar of the next kept step (1 = clean), beta = respaced beta_t,
    mean = mu-tilde_t(x_t, x_0), variance = beta-tilde_t, noise = z. noise may be None only when abar_s = 1.
    """
    abar_t, abar_s = float(abar_t), float(abar_s)
    if not 0 < abar_t < abar_s <= 1:
        raise ValueError(f"need 0 < abar_t < abar_s <= 1 (s is a less noisy step), got {abar_t}, {abar_s}")
    # A half-precision x0_hat (autocast) is promoted: the state x_s stays float32 (float64 stays float64).
    dtype = working_dtype(x_t, x0_hat)
    x_t, x0_hat = x_t.to(dtype), x0_hat.to(dtype)
    # 1. respaced beta_t = 1 - alpha-bar_t / alpha-bar_s (Nichol & Dhariwal 2021 sec. 4); alpha_t = 1 - beta_t.
    alpha = abar_t / abar_s
    beta = 1 - alpha
    # 2. posterior mean, eq. 7: mu-tilde_t = sqrt(abar_s) beta_t / (1 - abar_t) x_0
    #                                     + sqrt(alpha_t) (1 - abar_s) / (1 - abar_t) x_t.
    coef_x0 = math.sqrt(abar_s) * beta / (1 - abar_t)
    coef_xt = math.sqrt(alpha) * (1 - abar_s) / (1 - abar_t)
    mean = coef_x0 * x0_hat + coef_xt * x_t
    # 3. posterior variance beta-tilde_t = (1 - abar_s) / (1 - abar_t) beta_t; zero on the last step (abar_s = 1).
    variance = (1 - abar_s) / (1 - abar_t) * beta
    if variance == 0:
        return mean
    if noise is None:
        raise ValueError("ddpm_step needs noise (a standard normal tensor like x_t) unless abar_s = 1")
    # 4. x_s = mu-tilde_t + sqrt(beta-tilde_t) z.
    return mean + math.sqrt(variance) * noise


@torch.no_grad()
def ddpm(
    denoise: Denoiser,
    x: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor,
    *,
    generator: Generators = None,
    callback: Callback | None = None,
) -> Tensor:
    """Ho et al. 2020 Algorithm 2 over `timesteps` (respaced betas in between); x (B, C, *spatial) -> clean sample."""
    pairs = step_alphas(alphas_cumprod, timesteps)
    # indices and alpha-bars are read on the host once, before the loop: no step waits for the device
    for i, (t, (abar_t, abar_s)) in enumerate(zip(timesteps.tolist(), pairs)):
        x0_hat = denoise(x, batch_timesteps(t, x))
        # No noise is drawn on the last step: it lands on the clean sample (abar_s = 1, variance 0).
        noise = randn_like(x, generator) if abar_s < 1 else None
        x = ddpm_step(x, x0_hat, abar_t, abar_s, noise)
        if callback is not None:
            callback(i, x, x0_hat)
    return x
