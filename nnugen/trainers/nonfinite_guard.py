"""Counting non-finite steps (a NaN / Inf loss, or gradient without fp16's scaler): each is skipped; K in a row stop
the run with the likely causes. A skipped step's NaN loss stays out of the epoch's mean train loss."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


class NonFiniteLossError(RuntimeError):
    """Raised after too many consecutive non-finite steps; the last good checkpoint is left untouched."""


def finite_outputs(outputs: list[dict]) -> list[dict]:
    """The step outputs (nnU-Net's ``train_step`` dicts) whose ``loss`` is finite; all of them when none is."""
    finite = [output for output in outputs if np.isfinite(output["loss"]).all()]
    return finite or outputs


@dataclass
class NonFiniteGuard:
    max_consecutive: int
    consecutive: int = 0
    total: int = 0
    applied: int = 0
    """Optimiser steps taken (finite loss and gradient), over the run."""

    def record(self, finite: bool, amp: str) -> None:
        """Call once per step; raises NonFiniteLossError once ``max_consecutive`` non-finite steps follow each other."""
        if finite:
            self.consecutive = 0
            self.applied += 1
            return
        self.consecutive += 1
        self.total += 1
        if self.consecutive >= self.max_consecutive:
            hint = "fp16 AMP overflows easily: set memory.amp to bf16 or fp32 with nnugen_plan --set; "
            hint = hint if amp == "fp16" else ""
            raise NonFiniteLossError(
                f"{self.consecutive} consecutive non-finite losses or gradients ({self.total} in all): the run "
                f"stops and the last good checkpoint is kept. Likely causes: {hint}a learning rate too high "
                "(training.initial_lr), or NaN / Inf voxels in the data (run nnugen_check -d ID)")

    def skip(self, what: str, amp: str, log: Callable[[str], None]) -> None:
        """Record a skipped non-finite step (``record``, which may raise), then ``log`` it as "WHAT (N so far)"."""
        self.record(False, amp)
        log(f"{what} ({self.total} so far)")

    def check_epoch(self, applied_before: int, epoch: int) -> None:
        """NonFiniteLossError when epoch ``epoch`` took no optimiser step at all (every step skipped): a run that
        cannot learn stops here, loudly, instead of finishing with weights it never trained."""
        if self.applied == applied_before:
            raise NonFiniteLossError(
                f"epoch {epoch}: every step was skipped for a non-finite loss or gradient, so the model cannot learn; "
                "the run stops and the last good checkpoint is kept. Check training.initial_lr, memory.amp and the "
                "data (nnugen_check -d ID)")


def check_final_weights(network: torch.nn.Module) -> None:
    """NonFiniteLossError when a weight of ``network`` is NaN / Inf at the end of training: no checkpoint_final.pth
    can be written, so neither it nor the final validation may pretend the run succeeded (and nnU-Net would delete
    checkpoint_latest.pth right after failing to write the final one)."""
    bad = [name for name, value in network.state_dict().items()
           if value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        raise NonFiniteLossError(f"the trained weights are not finite ({bad[0]}): no checkpoint_final.pth is written "
                                 "and nothing is validated; the last good checkpoint_latest.pth is kept. Resume from "
                                 "it with a lower training.initial_lr")
