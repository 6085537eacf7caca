"""Per-sample schedule values broadcast over (B, C, *spatial) tensors, so 2D and 3D share one code path."""

from __future__ import annotations

import torch
from torch import Tensor


def append_dims(values: Tensor, ndim: int) -> Tensor:
    """Reshape per-sample values (B,) to (B, 1, ..., 1) with `ndim` dims, to broadcast over (B, C, *spatial)."""
    if values.ndim > ndim:
        raise ValueError(f"values have {values.ndim} dims, more than the {ndim} requested; pass per-sample values (B,)")
    return values.reshape(*values.shape, *([1] * (ndim - values.ndim)))


def schedule_at(schedule: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """Values of a schedule (T,) at training indices t (B,), as (B, 1, ..., 1) in `like`'s dtype and device.

    The schedule stays in float64 until this lookup, so the cast happens once, at use.
    """
    if schedule.ndim != 1:
        raise ValueError(f"schedule must be 1D (T,), got shape {tuple(schedule.shape)}")
    if t.ndim != 1 or t.shape[0] != like.shape[0] or t.dtype.is_floating_point:
        raise ValueError(
            f"t must be an integer tensor (B,) with B = {like.shape[0]} training indices, got {t.dtype} "
            f"{tuple(t.shape)}; build it with torch.full((B,), t, dtype=torch.long)"
        )
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= schedule.shape[0]):
        raise ValueError(f"t must lie in [0, {schedule.shape[0]}), got [{int(t.min())}, {int(t.max())}]")
    values = schedule[t.to(schedule.device)]
    return append_dims(values, like.ndim).to(device=like.device, dtype=like.dtype)


def batch_timesteps(t: int | Tensor, like: Tensor) -> Tensor:
    """One training index repeated over the batch: LongTensor (B,) on `like`'s device, the `denoise(x_t, t)` input."""
    return torch.full((like.shape[0],), int(t), dtype=torch.long, device=like.device)
