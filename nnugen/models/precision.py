"""The precision a model samples in: the one its plan chose (``memory.amp``), whatever autocast its caller opened.

nnU-Net's validation step and its predictor run every network under ``torch.autocast("cuda")``, that is fp16, even
when the plan chose bf16 (fp16's range overflows in long sampler loops) or fp32. A model's sampling therefore opens
its own autocast, which replaces the caller's: the planned half dtype, or autocast switched off for fp32. On the CPU
nnugen never autocasts by itself (slow, and no memory to win); the planned dtype only replaces an autocast a caller
opened there, which is how the CPU tests reach this path."""

from __future__ import annotations

import contextlib

import torch

HALF_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def planned_autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """A context for sampling on ``device`` in the planned precision ``amp`` ("bf16", "fp16" or "fp32")."""
    if amp not in (*HALF_DTYPES, "fp32"):
        raise ValueError(f"amp must be bf16, fp16 or fp32, got {amp!r}")
    kind = device.type
    if kind not in ("cuda", "cpu"):
        return contextlib.nullcontext()  # mps: nnU-Net opens no autocast there either
    if amp == "fp32":
        return torch.autocast(kind, enabled=False) if torch.is_autocast_enabled(kind) else contextlib.nullcontext()
    if kind == "cpu" and not torch.is_autocast_enabled(kind):
        return contextlib.nullcontext()
    dtype = HALF_DTYPES[amp]
    if kind == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        dtype = torch.float16  # as the trainer falls back on a GPU without bf16
    return torch.autocast(kind, dtype=dtype)
