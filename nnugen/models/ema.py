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
    for average, current in zip(ema.parameters(), module.parameters()):
        average.lerp_(current.detach(), 1 - decay)
    for average, current in zip(ema.buffers(), module.buffers()):
        average.copy_(current)
