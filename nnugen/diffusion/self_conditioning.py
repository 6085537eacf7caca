"""Self-conditioning (Chen et al. 2022, "Analog bits"): the previous x0 estimate as extra input channels."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from nnugen.diffusion.noise import rand
from nnugen.diffusion.parameterisation import Denoiser

ConditionedDenoiser = Callable[[Tensor, Tensor, Tensor], Tensor]
"""`denoise(x_t, t, x0_cond) -> x0_hat`, all (B, C, *spatial) but t (B,); the network concatenates x0_cond."""


def self_conditioning_input(
    denoise: ConditionedDenoiser,
    x_t: Tensor,
    t: Tensor,
    probability: float = 0.5,
    generator: torch.Generator | None = None,
    coin: Tensor | None = None,
) -> Tensor:
    """Chen et al. 2022 Algorithm 1 training: with `probability` (per batch) the detached estimate of a first pass
    with a zero condition, else zeros; (B, C, *spatial) like x_t, to pass as x0_cond of the trained pass.

    coin: the uniform [0, 1) draw (1,) that decides, instead of one drawn here from `generator`. Under DDP pass the
    same draw on every rank (e.g. rank 0's): a rank that runs the extra pass alone leaves SyncBatchNorm waiting.
    """
    if not 0 <= probability <= 1:
        raise ValueError(f"probability must lie in [0, 1], got {probability}")
    zeros = torch.zeros_like(x_t)
    # One coin per batch as in the paper: half the steps then cost no extra forward pass.
    if probability == 0:
        return zeros
    if coin is None:
        coin = rand(1, generator)
    if float(coin) >= probability:
        return zeros
    with torch.no_grad():
        return denoise(x_t, t, zeros).detach()


def self_conditioned_denoiser(denoise: ConditionedDenoiser) -> Denoiser:
    """Chen et al. 2022 Algorithm 2 sampling: a `denoise(x_t, t)` feeding each call the previous call's estimate.

    It holds the estimate of one sampling run: build a fresh one per run (samplers stay stateless).
    """
    previous: list[Tensor] = []

    def conditioned(x_t: Tensor, t: Tensor) -> Tensor:
        condition = previous[0] if previous and previous[0].shape == x_t.shape else torch.zeros_like(x_t)
        x0_hat = denoise(x_t, t, condition)
        previous[:] = [x0_hat.detach()]
        return x0_hat

    return conditioned
