"""Which training timesteps a sampler visits, and the alpha-bar pairs of its steps."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def sampling_timesteps(train_timesteps: int, steps: int, start: int | None = None) -> Tensor:
    """Decreasing LongTensor (steps,) of training indices, evenly spaced from `start` (default T - 1) down to 0.

    Nichol & Dhariwal 2021 sec. 4 (respacing): any subsequence of the training steps defines a valid sampler.
    """
    if isinstance(train_timesteps, bool) or not isinstance(train_timesteps, int) or train_timesteps < 1:
        raise ValueError(f"train_timesteps must be an integer >= 1, got {train_timesteps!r}")
    start = train_timesteps - 1 if start is None else start
    if not 0 <= start < train_timesteps:
        raise ValueError(f"start must lie in [0, {train_timesteps - 1}], got {start}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= start + 1:
        raise ValueError(f"steps must be an integer in [1, {start + 1}] (the timesteps from {start} to 0), got {steps}")
    # floor(x + 0.5) rather than torch.round: round-half-to-even could merge two neighbours one apart.
    return torch.floor(torch.linspace(start, 0, steps, dtype=torch.float64) + 0.5).long()


def partial_start(strength: float, train_timesteps: int) -> int:
    """Start index round(strength * T) - 1 for partial noising (SDEdit, Meng et al. 2022); strength in (0, 1]."""
    if not 0 < strength <= 1:
        raise ValueError(f"strength must lie in (0, 1] (1 = pure noise), got {strength}")
    return max(math.floor(strength * train_timesteps + 0.5) - 1, 0)


def check_timesteps(timesteps: Tensor, train_timesteps: int, increasing: bool = False) -> None:
    """Raise ValueError unless timesteps is a non-empty 1D integer tensor, strictly monotone, within [0, T)."""
    order = "increasing" if increasing else "decreasing"
    if timesteps.ndim != 1 or timesteps.numel() == 0 or timesteps.dtype.is_floating_point:
        raise ValueError("timesteps must be a non-empty 1D LongTensor; build it with sampling_timesteps()")
    steps = timesteps.detach().cpu()
    if int(steps.min()) < 0 or int(steps.max()) >= train_timesteps:
        raise ValueError(f"timesteps must lie in [0, {train_timesteps}), got [{int(steps.min())}, {int(steps.max())}]")
    diffs = steps.diff()
    if bool((diffs <= 0).any() if increasing else (diffs >= 0).any()):
        raise ValueError(f"timesteps must be strictly {order}, got {steps.tolist()}")


def step_alphas(alphas_cumprod: Tensor, timesteps: Tensor) -> list[tuple[float, float]]:
    """(abar_t, abar_s) per step of a decreasing timesteps sequence: s is the next timestep, abar_s = 1 after the last.

    Python floats (float64) so every step's coefficients are computed in double precision and cast at use. The values
    are read on the host once per sampling run: pass the schedule on the CPU (models keep a float64 host copy,
    ``host_alphas_cumprod``), as a CUDA tensor costs a device sync here.
    """
    if alphas_cumprod.ndim != 1:
        raise ValueError(f"alphas_cumprod must be 1D (T,), got shape {tuple(alphas_cumprod.shape)}")
    check_timesteps(timesteps, alphas_cumprod.shape[0])
    abar = alphas_cumprod.detach().to("cpu", torch.float64)[timesteps.detach().cpu()].tolist()
    return list(zip(abar, [*abar[1:], 1.0]))
