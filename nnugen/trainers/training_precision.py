"""The precision nnugen's trainers train in: autocast with the dtype the plan chose (``memory.amp``) on a GPU, none on
the CPU (slow, and no memory to win there) or for fp32, fp16 on a GPU without bf16."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from nnugen.models.precision import HALF_DTYPES


def training_amp_dtype(device: torch.device, amp: str, log: Callable[[str], None]) -> torch.dtype | None:
    """The autocast dtype for training on ``device`` with the plan's ``amp`` ("bf16", "fp16" or "fp32"); None for no
    autocast. ``log`` says so when a GPU without bf16 falls back to fp16 (with gradient scaling)."""
    if device.type != "cuda" or amp == "fp32":
        return None
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        log("This GPU has no bf16: using fp16 AMP with gradient scaling instead")
        return torch.float16
    return HALF_DTYPES[amp]


def training_autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast on ``device`` with ``dtype`` (``training_amp_dtype``'s); a context that does nothing for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
