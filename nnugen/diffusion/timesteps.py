"""Which training timesteps a sampler visits, and the alpha-bar pairs of its steps."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nnugen.config import SPACINGS


def sampling_timesteps(
    train_timesteps: int,
    steps: int,
    start: int | None = None,
    spacing: str = "uniform",
    alphas_cumprod: Tensor | None = None,
) -> Tensor:
    """Decreasing LongTensor (steps,) of training indices from `start` (default T - 1) on, placed by `spacing`.

    Nichol & Dhariwal 2021 sec. 4 (respacing): any subsequence of the training steps defines a valid sampler. The
    sampler's last step goes from the grid's last index to the clean sample (abar = 1).

    Spacings, with S = start + 1 and k = 0 ... steps - 1:
        "uniform": floor(start (1 - k / (steps - 1)) + 0.5), evenly spaced in t from start down to 0 (diffusers'
            ``timestep_spacing="linspace"``, which rounds half to even instead).
        "trailing": round(S - k S / steps) - 1, from start down to S / steps - 1 (diffusers'
            ``timestep_spacing="trailing"``, computed the same way; Lin et al. 2024, "Common diffusion noise schedules
            and sample steps are flawed", Table 2): the last step spans S / steps indices instead of one.
        "log-snr": the index nearest in log-SNR lambda(t) = log(abar_t / (1 - abar_t)) to points uniform in lambda
            from lambda(start) to lambda(0) (Lu et al. 2022, DPM-Solver: time steps uniform in logSNR; diffusers'
            ``DPMSolverMultistepScheduler(use_lu_lambdas=True)``, which rounds the log-sigma interpolated t: the same
            index), ties to the smaller index; where two points share an index, neighbours are moved apart by one
            so the grid stays strictly decreasing. Needs ``alphas_cumprod`` (T,), all values in (0, 1).
    """
    if isinstance(train_timesteps, bool) or not isinstance(train_timesteps, int) or train_timesteps < 1:
        raise ValueError(f"train_timesteps must be an integer >= 1, got {train_timesteps!r}")
    start = train_timesteps - 1 if start is None else start
    if not 0 <= start < train_timesteps:
        raise ValueError(f"start must lie in [0, {train_timesteps - 1}], got {start}")
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= start + 1:
        raise ValueError(f"steps must be an integer in [1, {start + 1}] (the timesteps from {start} to 0), got {steps}")
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {', '.join(SPACINGS)}, got {spacing!r}")
    if spacing == "trailing":
        return _trailing(start + 1, steps)
    if spacing == "log-snr":
        return _log_snr_grid(_checked_schedule(alphas_cumprod, train_timesteps), start, steps)
    # floor(x + 0.5) rather than torch.round: round-half-to-even could merge two neighbours one apart.
    return torch.floor(torch.linspace(start, 0, steps, dtype=torch.float64) + 0.5).long()


def _trailing(size: int, steps: int) -> Tensor:
    # numpy's arange(size, 0, -size / steps) fills start + k * delta with delta = (start + step) - start; the same
    # double arithmetic here gives diffusers' grid to the bit. Points >= 1 apart round (half to even) to distinct ints.
    delta = (size - size / steps) - size
    return torch.round(torch.tensor([size + k * delta for k in range(steps)], dtype=torch.float64)).long() - 1


def _checked_schedule(alphas_cumprod: Tensor | None, train_timesteps: int) -> Tensor:
    if alphas_cumprod is None or alphas_cumprod.shape != (train_timesteps,):
        shape = None if alphas_cumprod is None else tuple(alphas_cumprod.shape)
        raise ValueError(f"spacing 'log-snr' needs alphas_cumprod of shape ({train_timesteps},), got {shape}; pass "
                         "the model's schedule")
    abar = alphas_cumprod.detach().to("cpu", torch.float64)
    if not bool(((abar > 0) & (abar < 1)).all()):
        raise ValueError("spacing 'log-snr' needs every alphas_cumprod in (0, 1) (a finite log-SNR); use 'trailing' "
                         "for a schedule with zero terminal SNR")
    return abar


def _log_snr_grid(abar: Tensor, start: int, steps: int) -> Tensor:
    if start == 0:
        return torch.zeros(1, dtype=torch.long)
    log_snr = (abar.log() - (-abar).log1p())[: start + 1]  # decreasing in t for any valid schedule
    targets = torch.linspace(float(log_snr[start]), float(log_snr[0]), steps, dtype=torch.float64)
    # nearest index: -log_snr increases with t, so searchsorted finds the two neighbours of every target
    upper = torch.searchsorted(-log_snr, -targets).clamp(1, start)
    lower = upper - 1
    nearer_lower = (log_snr[lower] - targets).abs() <= (targets - log_snr[upper]).abs()
    grid = torch.where(nearer_lower, lower, upper).tolist()
    # 1. bottom up: at least one above the next; 2. top down: at least one below the previous, start at most. Each
    #    pass keeps the other's bound (index k stays in [steps - 1 - k, start - k]), so the grid is strictly decreasing.
    for k in range(steps - 2, -1, -1):
        grid[k] = max(grid[k], grid[k + 1] + 1)
    for k in range(steps):
        grid[k] = min(grid[k], start if k == 0 else grid[k - 1] - 1)
    return torch.tensor(grid, dtype=torch.long)


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
