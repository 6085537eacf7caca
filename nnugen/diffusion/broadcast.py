"""Per-sample schedule values broadcast over (B, C, *spatial) tensors, so 2D and 3D share one code path."""

from __future__ import annotations

import torch
from torch import Tensor


def working_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype diffusion arithmetic runs in: the tensors' promoted dtype, at least float32.

    Half-precision network outputs (fp16 / bf16 autocast) are promoted, because sqrt(1 - abar) near abar = 1 and the
    division by sqrt(abar) near abar = 0 lose most of their digits in half precision; float64 stays float64.
    """
    dtype = torch.float32
    for tensor in tensors:
        if tensor.dtype.is_floating_point:
            dtype = torch.promote_types(dtype, tensor.dtype)
    return dtype


def append_dims(values: Tensor, ndim: int) -> Tensor:
    """Reshape per-sample values (B,) to (B, 1, ..., 1) with `ndim` dims, to broadcast over (B, C, *spatial)."""
    if values.ndim > ndim:
        raise ValueError(f"values have {values.ndim} dims, more than the {ndim} requested; pass per-sample values (B,)")
    return values.reshape(*values.shape, *([1] * (ndim - values.ndim)))


def schedule_at(schedule: Tensor, t: Tensor, like: Tensor) -> Tensor:
    """Values of a schedule (T,) at training indices t (B,), as (B, 1, ..., 1) on `like`'s device, in
    ``working_dtype(like)``: float32 for float32 and half-precision `like`, float64 for float64.

    The schedule stays in float64 until this lookup, so the cast happens once, at use. The lookup reads no value on
    the host (no device sync per sampler step): the range of t is checked for CPU indices only, CUDA indexing
    asserts out-of-range indices itself.
    """
    if schedule.ndim != 1:
        raise ValueError(f"schedule must be 1D (T,), got shape {tuple(schedule.shape)}")
    if t.ndim != 1 or t.shape[0] != like.shape[0] or t.dtype.is_floating_point:
        raise ValueError(
            f"t must be an integer tensor (B,) with B = {like.shape[0]} training indices, got {t.dtype} "
            f"{tuple(t.shape)}; build it with torch.full((B,), t, dtype=torch.long)"
        )
    if t.device.type == "cpu" and t.numel() and (int(t.min()) < 0 or int(t.max()) >= schedule.shape[0]):
        raise ValueError(f"t must lie in [0, {schedule.shape[0]}), got [{int(t.min())}, {int(t.max())}]")
    # Everything moves towards `like`: host-to-device copies need no sync when non-blocking; models keep the schedule
    # on their device already, so there it moves nothing.
    to_device = like.device.type != "cpu"
    values = schedule.to(like.device, non_blocking=to_device)[t.to(like.device, non_blocking=to_device)]
    return append_dims(values, like.ndim).to(dtype=working_dtype(like))


def batch_timesteps(t: int | Tensor, like: Tensor) -> Tensor:
    """One training index repeated over the batch: LongTensor (B,) on `like`'s device, the `denoise(x_t, t)` input.

    Pass a Python int (samplers read their timesteps on the host once per run): an index held by a CUDA tensor is
    read with a device sync.
    """
    return torch.full((like.shape[0],), int(t), dtype=torch.long, device=like.device)
