"""The backward pass and optimiser step of nnugen's trainers: the loss scaled by fp16's GradScaler, the gradients
clipped as nnU-Net clips them, then the step, unless the gradient is non-finite.

fp16 leaves an inf / NaN gradient to the GradScaler, which skips the step and lowers its scale; under bf16 and fp32
there is no scaler, so a non-finite gradient norm skips the step here (it would otherwise pass through clipping into
the weights). The norm is of the all-reduced gradients, equal on all ranks, so every rank decides alike."""

from __future__ import annotations

from collections.abc import Iterable

import torch

MAX_GRAD_NORM = 12
"""nnU-Net's gradient clipping norm."""


def scaled_backward(loss: torch.Tensor, grad_scaler: torch.amp.GradScaler | None) -> None:
    """``loss.backward()``, through ``grad_scaler``'s loss scaling when there is one (fp16)."""
    (grad_scaler.scale(loss) if grad_scaler is not None else loss).backward()


def clip_and_step(parameters: Iterable[torch.nn.Parameter], optimizer: torch.optim.Optimizer,
                  grad_scaler: torch.amp.GradScaler | None) -> bool:
    """Clip the gradients of ``parameters`` to norm ``MAX_GRAD_NORM`` and step ``optimizer`` (through ``grad_scaler``
    under fp16). False when, without a scaler, the gradient norm was non-finite and the step was skipped; the
    gradients are then left as they are."""
    if grad_scaler is not None:
        grad_scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(parameters, MAX_GRAD_NORM)
    if grad_scaler is not None:
        grad_scaler.step(optimizer)
        grad_scaler.update()
        return True
    if not bool(torch.isfinite(norm)):
        return False
    optimizer.step()
    return True
