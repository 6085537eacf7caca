"""The noisy input of one training step: standard (Ho et al. 2020) or recycled (Fu et al. 2023, ImgX-DiffSeg)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from nnugen.diffusion.forward_process import q_sample
from nnugen.diffusion.noise import randint, randn_like
from nnugen.diffusion.parameterisation import Denoiser

RECYCLING_PREVIOUS = ("max", "next")


class TrainingInput(NamedTuple):
    """x_t = q_sample(noised_x0, t, alphas_cumprod, noise); all (B, C, *spatial) but t (B,) long.

    Targets for "eps" / "v" are training_target(kind, noised_x0, noise, abar_t), which reproduce x_t exactly;
    losses on the x0 estimate compare it with the ground truth. noised_x0 is the ground truth except when recycled.
    """

    x_t: Tensor
    t: Tensor
    noise: Tensor
    noised_x0: Tensor


def sample_training_timesteps(
    batch_size: int, train_timesteps: int, generator: torch.Generator | None = None, device: torch.device | None = None
) -> Tensor:
    """Training indices t ~ U{0, ..., T - 1} as a LongTensor (B,) (Ho et al. 2020 Algorithm 1)."""
    if train_timesteps < 1:
        raise ValueError(f"train_timesteps must be >= 1, got {train_timesteps}")
    return randint(train_timesteps, batch_size, generator, device)


def noisy_training_input(x0: Tensor, alphas_cumprod: Tensor, generator: torch.Generator | None = None,
                         noise: Tensor | None = None) -> TrainingInput:
    """Ho et al. 2020 Algorithm 1: t uniform, eps ~ N(0, I), x_t = q_sample(x0, t, eps); x0 (B, C, *spatial).
    ``noise``: another eps of x0's shape, zero mean and unit variance (AnoDDPM's simplex noise, Wyatt et al. 2022)."""
    t = sample_training_timesteps(x0.shape[0], alphas_cumprod.shape[0], generator, x0.device)
    noise = randn_like(x0, generator) if noise is None else noise
    return TrainingInput(q_sample(x0, t, alphas_cumprod, noise), t, noise, x0)


def recycled_training_input(
    denoise: Denoiser,
    x0: Tensor,
    alphas_cumprod: Tensor,
    previous: str = "max",
    generator: torch.Generator | None = None,
) -> TrainingInput:
    """Fu et al. 2023 (ImgX-DiffSeg) recycling: noise the model's own x0 estimate, as sampling does; x0 (B, C, ...).

    `denoise(x_t, t) -> x0_hat` runs once without gradients; `previous` picks the later step t' it sees:
    "max" (t' = T - 1, pure noise as at sampling start) or "next" (t' = t + 1).
    """
    if previous not in RECYCLING_PREVIOUS:
        raise ValueError(f"unknown previous {previous!r}; choose one of {RECYCLING_PREVIOUS}")
    num_timesteps = alphas_cumprod.shape[0]
    if num_timesteps < 2:
        raise ValueError("recycling needs at least 2 training timesteps (t < t'); use noisy_training_input")
    # 1. t ~ U{0, ..., T - 2}, so that a strictly later step t' exists (as ImgX-DiffSeg samples it).
    t = randint(num_timesteps - 1, x0.shape[0], generator, x0.device)
    # 2. t' and x_{t'} = q_sample(x0, t', eps') from the ground truth.
    t_later = torch.full_like(t, num_timesteps - 1) if previous == "max" else t + 1
    x_later = q_sample(x0, t_later, alphas_cumprod, randn_like(x0, generator))
    # 3. x0_hat = denoise(x_{t'}, t') without gradients: the input is data, not part of the graph.
    with torch.no_grad():
        x0_hat = denoise(x_later, t_later).detach()
    # 4. x_t = q_sample(x0_hat, t, eps) with fresh noise.
    noise = randn_like(x0, generator)
    return TrainingInput(q_sample(x0_hat, t, alphas_cumprod, noise), t, noise, x0_hat)
