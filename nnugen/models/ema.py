"""Exponential moving average of weights (Polyak averaging; used for diffusion sampling by Ho et al. 2020 and
Nichol & Dhariwal 2021): ema <- decay * ema + (1 - decay) * weights, after every optimiser step."""

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


@torch.no_grad()
def update_ema(ema: nn.Module, module: nn.Module, decay: float) -> None:
    for average, current in zip(ema.parameters(), module.parameters()):
        average.lerp_(current.detach(), 1 - decay)
    for average, current in zip(ema.buffers(), module.buffers()):
        average.copy_(current)
