"""The trainer's measured peak GPU memory, reported next to the memory plan's estimate."""

from __future__ import annotations

import torch

from nnugen.config import MemorySettings
from nnugen.trainers.peak_memory import peak_memory_gb, peak_memory_note


def test_the_cpu_has_no_peak_to_report():
    assert peak_memory_gb(torch.device("cpu")) is None


def test_the_note_compares_the_peak_with_the_estimate_and_warns_above_the_budget():
    memory = MemorySettings(budget_gb=8.0, batch_size=2, grad_accumulation=1, amp="bf16", estimated_gb=6.63,
                            activation_checkpointing=True)
    note = peak_memory_note(5.125, memory)
    assert note.startswith("peak GPU memory 5.12 GB") and "estimated 6.63 GB" in note and "budget 8 GB" in note
    assert "above the budget" not in note
    assert "above the budget" in peak_memory_note(8.5, memory)
