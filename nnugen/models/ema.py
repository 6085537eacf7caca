"""Exponential moving average of weights (Polyak averaging; used for diffusion sampling by Ho et al. 2020 and
Nichol & Dhariwal 2021): ema <- d * ema + (1 - d) * weights, after every optimiser step.

The decay warms up: after n updates d = min(decay, (1 + n) / (10 + n)), the schedule of the DDPM reference code's
TensorFlow EMA (``num_updates``). Without it the average keeps ``decay ** n`` of the random initial weights: 37 % after
1,000 steps at decay 0.999, so a short training samples from a mostly untrained model."""

from __future__ import annotations

import copy

import torch
from torch import nn


def make_ema(module: nn.Module) -> nn.Module:
    """A frozen copy of ``module`` to hold the average (no gradients, so DDP ignores it)."""
    ema = copy.deepcopy(module)
    for parameter in ema.parameters():
        parameter.requires_grad_(False)
    return ema


def warmed_up_decay(decay: float, updates: int) -> float:
    """The decay of update number ``updates`` (0 for the first): min(decay, (1 + updates) / (10 + updates))."""
    return min(decay, (1 + updates) / (10 + updates))


@torch.no_grad()
def update_ema(ema: nn.Module, module: nn.Module, decay: float) -> None:
    """ema <- ema + (1 - decay) (weights - ema) for every parameter, buffers (e.g. norm statistics) copied.

    One fused ``_foreach`` call for all parameters instead of a loop of small kernels (one launch per parameter on a
    GPU); the result equals ``average.lerp_(current, 1 - decay)`` parameter by parameter. ``ema`` and ``module``
    must have the same architecture (``make_ema``), so their parameters and buffers pair up in order.
    """
    averages, currents = list(ema.parameters()), [p.detach() for p in module.parameters()]
    average_buffers, current_buffers = list(ema.buffers()), list(module.buffers())
    if len(averages) != len(currents) or len(average_buffers) != len(current_buffers):
        raise ValueError(f"the EMA copy has {len(averages)} parameters and {len(average_buffers)} buffers, the module "
                         f"{len(currents)} and {len(current_buffers)}; build the EMA copy with make_ema(module)")
    # the foreach ops refuse empty lists
    if averages:
        torch._foreach_lerp_(averages, currents, 1 - decay)
    if average_buffers:
        torch._foreach_copy_(average_buffers, current_buffers)
