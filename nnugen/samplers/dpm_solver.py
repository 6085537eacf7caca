"""DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2): multistep second order, data prediction."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nnugen.diffusion import Denoiser, batch_timesteps, step_alphas, working_dtype
from nnugen.diffusion.noise import Generators
from nnugen.samplers.signature import Callback


def _log_snr(abar: float) -> float:
    """lambda = log(alpha / sigma) with alpha = sqrt(abar), sigma = sqrt(1 - abar) (Lu et al. 2022)."""
    return 0.5 * (math.log(abar) - math.log1p(-abar))


def dpm_solver_pp_step(
    x_t: Tensor,
    x0_hat: Tensor,
    abar_t: float,
    abar_s: float,
    x0_hat_u: Tensor | None = None,
    abar_u: float | None = None,
) -> Tensor:
    """One DPM-Solver++ step t -> s < t; first order without (x0_hat_u, abar_u), else 2M; tensors (B, C, *spatial).

    Symbols (paper, step i): t = t_{i-1}, s = t_i, u = t_{i-2}; x0_hat = x_theta(x_{t_{i-1}}), x0_hat_u =
    x_theta(x_{t_{i-2}}); alpha = sqrt(abar), sigma = sqrt(1 - abar), lambda = log(alpha / sigma), h = lambda_s -
    lambda_t, r = h_{i-1} / h_i, d = D_i. abar_s = 1 (the clean sample) is allowed on the first-order path only.
    """
    abar_t, abar_s = float(abar_t), float(abar_s)
    if not 0 < abar_t < abar_s <= 1:
        raise ValueError(f"need 0 < abar_t < abar_s <= 1 (s is a less noisy step), got {abar_t}, {abar_s}")
    # Half-precision estimates (autocast) are promoted: the state x_s stays float32 (float64 stays float64).
    dtype = working_dtype(x_t, x0_hat)
    x_t, x0_hat = x_t.to(dtype), x0_hat.to(dtype)
    # 1. alpha and sigma at both ends; exp(-h) = (alpha_t sigma_s) / (sigma_t alpha_s), written without logs so
    #    that abar_s = 1 (sigma_s = 0, h = inf) gives exp(-h) = 0 and x_s = x0_hat exactly.
    alpha_s, sigma_s = math.sqrt(abar_s), math.sqrt(1 - abar_s)
    sigma_t, alpha_t = math.sqrt(1 - abar_t), math.sqrt(abar_t)
    exp_neg_h = (alpha_t * sigma_s) / (sigma_t * alpha_s)
    # 2. d = x0_hat (first order, DPM-Solver++(1) = DDIM) or the 2M combination
    #    D_i = (1 + 1 / (2 r)) x0_hat - 1 / (2 r) x0_hat_u.
    d = x0_hat
    if x0_hat_u is not None:
        if abar_u is None or not 0 < float(abar_u) < abar_t:
            raise ValueError(f"the second-order step needs abar_u < abar_t (u the earlier, noisier step), got {abar_u}")
        if abar_s >= 1:
            raise ValueError("the step to the clean sample (abar_s = 1) must be first order; pass no x0_hat_u")
        lambda_u, lambda_t, lambda_s = _log_snr(float(abar_u)), _log_snr(abar_t), _log_snr(abar_s)
        r = (lambda_t - lambda_u) / (lambda_s - lambda_t)
        d = (1 + 1 / (2 * r)) * x0_hat - (1 / (2 * r)) * x0_hat_u.to(dtype)
    # 3. x_s = (sigma_s / sigma_t) x_t - alpha_s (exp(-h) - 1) d.
    return (sigma_s / sigma_t) * x_t + alpha_s * (1 - exp_neg_h) * d


@torch.no_grad()
def dpm_solver_pp(
    denoise: Denoiser,
    x: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor,
    *,
    generator: Generators = None,
    callback: Callback | None = None,
) -> Tensor:
    """Lu et al. 2022 DPM-Solver++(2M) over `timesteps`: first order on the first step and the last two
    ("lower_order_final"), 2M in between; deterministic, `generator` unused. x (B, C, *spatial).
    """
    pairs = step_alphas(alphas_cumprod, timesteps)
    x0_hat_u: Tensor | None = None
    abar_u: float | None = None
    # indices and alpha-bars are read on the host once, before the loop: no step waits for the device
    for i, (t, (abar_t, abar_s)) in enumerate(zip(timesteps.tolist(), pairs)):
        x0_hat = denoise(x, batch_timesteps(t, x))
        # Lower-order final steps (Lu et al. 2022's lower_order_final): the step to abar = 1 has lambda_s = inf,
        # where only the first-order update is defined (it returns x0_hat). The step into timesteps[-1] (index 0,
        # abar ~ 1 - beta_0) spans the largest log-SNR gap, so r << 1 and the 2M extrapolation 1 / (2r) overshoots
        # (seen on Gaussian data: std 0.39 instead of 0.30 with 20 steps); it is first order too.
        lower_order = i >= len(pairs) - 2
        x = dpm_solver_pp_step(x, x0_hat, abar_t, abar_s, None if lower_order else x0_hat_u, abar_u)
        x0_hat_u, abar_u = x0_hat, abar_t
        if callback is not None:
            callback(i, x, x0_hat)
    return x
