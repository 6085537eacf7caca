"""Deterministic DDIM inversion: encode a clean x0 into the noise that DDIM (eta = 0) decodes back to it.

Song et al. 2021 sec. 4.3 (the DDIM ODE run forwards); Dhariwal & Nichol 2021 appendix F.

Plain inversion (``iterations=0``) reads the network at the point it leaves, x_s, where the DDIM step it inverts read
it at the point it arrives at, x_t: decoding does not return x0 even with a perfect denoiser, and the error grows
as the steps get longer. With ``iterations=N > 0`` each step solves the implicit equation of the exact inverse,
x_t = F(x_s, x0_hat(x_t, t)), by fixed-point iteration from the plain step (Pan et al. 2023, "Effective real image
editing with accelerated iterative diffusion inversion", ICCV; Garibi et al. 2024, "ReNoise", ECCV): at the fixed
point the DDIM step from x_t lands on x_s exactly, so the round trip is exact up to the iteration's tolerance.

Why fixed-point iteration and not EDICT's coupled inversion (Wallace et al. 2023): it keeps one state tensor and the
samplers' one signature, so the plain ``ddim`` sampler decodes its result; EDICT's two coupled sequences decode only
with EDICT's own sampler (a second sampler for every caller, and two network calls per step always). The price: the
iteration converges when the step times the denoiser's Lipschitz constant is below 1 (short steps, smooth
denoisers); otherwise it stops after N iterations at the last iterate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from nnugen.diffusion import Denoiser, append_dims, batch_timesteps, check_timesteps, working_dtype
from nnugen.samplers.signature import Callback


def ddim_invert_step(x_s: Tensor, x0_hat: Tensor, abar_s: float, abar_t: float, at: Tensor | None = None) -> Tensor:
    """One DDIM ODE step up from s to t > s; x0_hat = denoise(at, t), all (B, C, *spatial).

    Symbols: abar_s = alpha-bar at the current (less noisy) point, 1 for the clean input; abar_t = alpha-bar of the
    target step; ``at`` the point the network read (default x_s). Evaluating the network at t with x_s is the usual
    approximation (x_s ~ x_t), and lets the first step start from the clean image where no network output exists;
    ``at`` = the current estimate of x_t gives the map whose fixed point is the exact inverse (fixed_point_refine).
    """
    abar_s, abar_t = float(abar_s), float(abar_t)
    if not 0 < abar_t < abar_s <= 1:
        raise ValueError(f"need 0 < abar_t < abar_s <= 1 (t is the noisier step), got abar_s={abar_s}, abar_t={abar_t}")
    # A half-precision x0_hat (autocast) is promoted: the state stays float32 (float64 stays float64).
    dtype = working_dtype(x_s, x0_hat)
    x_s, x0_hat = x_s.to(dtype), x0_hat.to(dtype)
    at = x_s if at is None else at.to(dtype)
    # 1. eps_hat = (at - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t): the network's noise estimate, read at step t.
    eps_hat = (at - math.sqrt(abar_t) * x0_hat) / math.sqrt(1 - abar_t)
    # 2. x0 consistent with x_s and eps_hat at abar_s: (x_s - sqrt(1 - abar_s) eps_hat) / sqrt(abar_s).
    x0_s = (x_s - math.sqrt(1 - abar_s) * eps_hat) / math.sqrt(abar_s)
    # 3. x_t = sqrt(abar_t) x0_s + sqrt(1 - abar_t) eps_hat (eq. 12 with sigma = 0, run upwards).
    return math.sqrt(abar_t) * x0_s + math.sqrt(1 - abar_t) * eps_hat


def check_fixed_point(iterations: int, tolerance: float) -> None:
    """ValueError unless iterations is an integer >= 0 and tolerance a finite number >= 0."""
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be an integer >= 0 (0 = plain DDIM inversion), got {iterations!r}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < math.inf:
        raise ValueError(f"tolerance must be a finite number >= 0 (0 = always run every iteration), got {tolerance!r}")


def fixed_point_refine(
    denoise_all: Callable[[list[Tensor]], list[Tensor]],
    x_s: Sequence[Tensor],
    x_t: Sequence[Tensor],
    alphas: Sequence[tuple[float, float]],
    iterations: int,
    tolerance: float,
) -> list[Tensor]:
    """Refine inversion steps x_s -> x_t towards the exact inverse of DDIM's step x_t -> x_s (Pan et al. 2023).

    Each of ``x_s[j]``, ``x_t[j]`` (N_j, C, *spatial) is one group of samples at its own step, ``alphas[j]`` =
    (abar_s, abar_t); ``denoise_all([x_t[j]]) -> [x0_hat(x_t[j], t_j)]`` reads the network for all groups at once
    (one call, so batched callers keep one call per iteration). Iteration k+1: x_t <- ddim_invert_step(x_s,
    x0_hat(x_t), abar_s, abar_t, at=x_t). A sample stops (keeps its value) once an update moves it by at most
    ``tolerance`` (max abs, in x's units), so its result does not depend on the others in the batch; tolerance 0
    runs every iteration and never reads a value back from the device.
    """
    check_fixed_point(iterations, tolerance)
    x_t = list(x_t)
    active = [torch.ones(x.shape[0], dtype=torch.bool, device=x.device) for x in x_t]
    for _ in range(iterations):
        for j, x0_hat in enumerate(denoise_all(x_t)):
            new = ddim_invert_step(x_s[j], x0_hat, *alphas[j], at=x_t[j])
            if tolerance == 0:
                x_t[j] = new
                continue
            previous = x_t[j].to(new.dtype)
            moved = (new - previous).abs().flatten(1).amax(1)
            x_t[j] = torch.where(append_dims(active[j], new.ndim), new, previous)
            active[j] = active[j] & (moved > tolerance)
        if tolerance > 0 and not any(bool(a.any()) for a in active):
            break
    return x_t


@torch.no_grad()
def ddim_invert(
    denoise: Denoiser,
    x0: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor,
    *,
    callback: Callback | None = None,
    iterations: int = 0,
    tolerance: float = 0.0,
) -> Tensor:
    """Encode x0 (B, C, *spatial) to x at timesteps[-1]; timesteps increasing, e.g. sampling_timesteps(...).flip(0).

    ddim(denoise, result, alphas_cumprod, timesteps.flip(0), eta=0) then approximately reconstructs x0 (iterations 0,
    plain inversion), or exactly up to ``tolerance`` once every step's fixed-point iteration converged (iterations
    N > 0: up to N more network calls per step, see fixed_point_refine).
    """
    check_fixed_point(iterations, tolerance)
    if alphas_cumprod.ndim != 1:
        raise ValueError(f"alphas_cumprod must be 1D (T,), got shape {tuple(alphas_cumprod.shape)}")
    check_timesteps(timesteps, alphas_cumprod.shape[0], increasing=True)
    # indices and alpha-bars are read on the host once, before the loop (alphas_cumprod on the CPU: no device sync)
    steps = timesteps.detach().cpu()
    abar = alphas_cumprod.detach().to("cpu", torch.float64)[steps].tolist()
    x, abar_s = x0, 1.0
    for i, (t, abar_t) in enumerate(zip(steps.tolist(), abar)):
        x0_hat = denoise(x, batch_timesteps(t, x))
        x_s, x = x, ddim_invert_step(x, x0_hat, abar_s, abar_t)
        if iterations > 0:
            [x] = fixed_point_refine(lambda xs, t=t: [denoise(xs[0], batch_timesteps(t, xs[0]))], [x_s], [x],
                                     [(abar_s, abar_t)], iterations, tolerance)
        if callback is not None:
            callback(i, x, x0_hat)
        abar_s = abar_t
    return x
