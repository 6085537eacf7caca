"""Deterministic DDIM inversion: encode a clean x0 into the noise that DDIM (eta = 0) decodes back to it.

Song et al. 2021 sec. 4.3 (the DDIM ODE run forwards); Dhariwal & Nichol 2021 appendix F.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nnugen.diffusion import Denoiser, batch_timesteps, check_timesteps, working_dtype
from nnugen.samplers.signature import Callback


def ddim_invert_step(x_s: Tensor, x0_hat: Tensor, abar_s: float, abar_t: float) -> Tensor:
    """One DDIM ODE step up from s to t > s; x0_hat = denoise(x_s, t), all (B, C, *spatial).

    Symbols: abar_s = alpha-bar at the current (less noisy) point, 1 for the clean input; abar_t = alpha-bar of the
    target step. Evaluating the network at t with x_s is the usual approximation (x_s ~ x_t), and lets the first
    step start from the clean image where no network output exists.
    """
    abar_s, abar_t = float(abar_s), float(abar_t)
    if not 0 < abar_t < abar_s <= 1:
        raise ValueError(f"need 0 < abar_t < abar_s <= 1 (t is the noisier step), got abar_s={abar_s}, abar_t={abar_t}")
    # A half-precision x0_hat (autocast) is promoted: the state stays float32 (float64 stays float64).
    dtype = working_dtype(x_s, x0_hat)
    x_s, x0_hat = x_s.to(dtype), x0_hat.to(dtype)
    # 1. eps_hat = (x_s - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t): the network's noise estimate, read at step t.
    eps_hat = (x_s - math.sqrt(abar_t) * x0_hat) / math.sqrt(1 - abar_t)
    # 2. x0 consistent with x_s and eps_hat at abar_s: (x_s - sqrt(1 - abar_s) eps_hat) / sqrt(abar_s).
    x0_s = (x_s - math.sqrt(1 - abar_s) * eps_hat) / math.sqrt(abar_s)
    # 3. x_t = sqrt(abar_t) x0_s + sqrt(1 - abar_t) eps_hat (eq. 12 with sigma = 0, run upwards).
    return math.sqrt(abar_t) * x0_s + math.sqrt(1 - abar_t) * eps_hat


@torch.no_grad()
def ddim_invert(
    denoise: Denoiser,
    x0: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor,
    *,
    callback: Callback | None = None,
) -> Tensor:
    """Encode x0 (B, C, *spatial) to x at timesteps[-1]; timesteps increasing, e.g. sampling_timesteps(...).flip(0).

    ddim(denoise, result, alphas_cumprod, timesteps.flip(0), eta=0) then approximately reconstructs x0.
    """
    if alphas_cumprod.ndim != 1:
        raise ValueError(f"alphas_cumprod must be 1D (T,), got shape {tuple(alphas_cumprod.shape)}")
    check_timesteps(timesteps, alphas_cumprod.shape[0], increasing=True)
    # indices and alpha-bars are read on the host once, before the loop (alphas_cumprod on the CPU: no device sync)
    steps = timesteps.detach().cpu()
    abar = alphas_cumprod.detach().to("cpu", torch.float64)[steps].tolist()
    x, abar_s = x0, 1.0
    for i, (t, abar_t) in enumerate(zip(steps.tolist(), abar)):
        x0_hat = denoise(x, batch_timesteps(t, x))
        x = ddim_invert_step(x, x0_hat, abar_s, abar_t)
        if callback is not None:
            callback(i, x, x0_hat)
        abar_s = abar_t
    return x
