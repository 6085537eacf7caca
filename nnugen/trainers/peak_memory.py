"""The measured peak GPU memory of training, next to what the memory plan estimated (nnugen_planner/memory.py), so
a user sees how far the estimate is off on their GPU and can pin another plan with ``nnugen_plan --set``."""

from __future__ import annotations

import torch

from nnugen.config import MemorySettings


def peak_memory_gb(device: torch.device) -> float | None:
    """The peak memory allocated by tensors on a CUDA device since the process started, in GB (2^30 bytes); None
    elsewhere (the CPU has no such counter)."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 1024**3


def peak_memory_note(peak_gb: float, memory: MemorySettings) -> str:
    """One log line: the measured peak against the plan's estimate and budget. The estimate includes a fixed 1 GB
    for the CUDA context, which the allocator's counter does not see."""
    batch = f"batch {memory.batch_size} x {memory.grad_accumulation} accumulated, amp {memory.amp}, " \
            f"checkpointing {'on' if memory.activation_checkpointing else 'off'}"
    line = f"peak GPU memory {peak_gb:.2f} GB allocated by tensors; the plan estimated {memory.estimated_gb:.2f} GB " \
           f"with the context ({batch}), budget {memory.budget_gb:g} GB"
    if peak_gb > memory.budget_gb:
        line += ": above the budget, plan with a smaller --gpu-memory-gb or set memory.batch_size lower"
    return line
