"""Noise schedules: betas (T,) and cumulative products alpha-bar (T,), computed in float64."""

from __future__ import annotations

import math

import torch
from torch import Tensor

SCHEDULES = ("linear", "scaled_linear", "cosine")

# Nichol & Dhariwal 2021 clip betas below 1 so that the last steps do not produce a singular alpha-bar = 0.
MAX_BETA = 0.999
# The number of steps the default linear beta range (1e-4, 0.02) was chosen for (Ho et al. 2020); other T respace it.
REFERENCE_TIMESTEPS = 1000


def make_betas(kind: str, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """Betas (T,) float64 for "linear" (Ho et al. 2020), "scaled_linear" (linear in sqrt(beta), Rombach et al.
    2022) or "cosine" (Nichol & Dhariwal 2021, s=0.008; beta_start/beta_end are ignored).

    The linear kinds are defined on 1000 reference steps; any other T takes T evenly spaced steps of that process
    (respacing, Nichol & Dhariwal 2021 sec. 4), as ImgX-DiffSeg does for its 5 training timesteps (a 1001-step beta
    schedule, sub-sampled). So T = 5 keeps the whole noise range, from alpha-bar near 1 down to near 0.
    """
    if isinstance(timesteps, bool) or not isinstance(timesteps, int) or timesteps < 1:
        raise ValueError(f"timesteps must be an integer >= 1, got {timesteps!r}")
    if kind == "cosine":
        return _cosine_betas(timesteps)
    if kind not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {kind!r}; choose one of {SCHEDULES}")
    if not 0.0 < beta_start <= beta_end:
        raise ValueError(f"need 0 < beta_start <= beta_end, got beta_start={beta_start}, beta_end={beta_end}")
    # T > 1000 discretises the same process more finely (betas scaled by 1000 / T, as improved DDPM does)
    scale = min(1.0, REFERENCE_TIMESTEPS / timesteps)
    steps = max(REFERENCE_TIMESTEPS, timesteps)
    start, end = beta_start * scale, beta_end * scale
    if kind == "linear":
        reference = torch.linspace(start, end, steps, dtype=torch.float64)
    else:
        reference = torch.linspace(math.sqrt(start), math.sqrt(end), steps, dtype=torch.float64) ** 2
    if timesteps == steps:
        return reference.clamp(max=MAX_BETA)
    abar = torch.cumprod(1 - reference, dim=0)
    # a single step must still reach (almost) pure noise, so T = 1 keeps the last reference step
    kept = torch.linspace(0, steps - 1, timesteps, dtype=torch.float64).round().long() if timesteps > 1 else \
        torch.tensor([steps - 1])
    abar = abar[kept]
    previous = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    return (1 - abar / previous).clamp(max=MAX_BETA)


def _cosine_betas(timesteps: int, s: float = 0.008) -> Tensor:
    """Nichol & Dhariwal 2021 eq. 17: alpha-bar(t) = f(t) / f(0), f(t) = cos((t/T + s) / (1 + s) * pi/2)^2."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    betas = 1 - abar[1:] / abar[:-1]
    return betas.clamp(min=0.0, max=MAX_BETA)


def alphas_cumprod(betas: Tensor) -> Tensor:
    """Ho et al. 2020: alpha-bar_t = prod_{s<=t} (1 - beta_s); (T,) float64, decreasing, in (0, 1]."""
    if betas.ndim != 1 or betas.numel() == 0:
        raise ValueError(f"betas must be a non-empty 1D tensor (T,), got shape {tuple(betas.shape)}")
    betas = betas.to(torch.float64)
    if bool((betas < 0).any()) or bool((betas >= 1).any()):
        raise ValueError("betas must lie in [0, 1); build them with make_betas()")
    return torch.cumprod(1 - betas, dim=0)
