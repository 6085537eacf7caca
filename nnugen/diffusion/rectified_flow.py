"""Rectified flow (Liu et al. 2023, "Flow Straight and Fast"; Esser et al. 2024) through MONAI's RFlowScheduler,
the scheduler MAISI v2 trains and samples with.

MONAI's convention, with T training timesteps and s = t / T in [0, 1]: x_t = (1 - s) x0 + s eps (``add_noise``),
the network predicts the velocity v = x0 - eps (the direction from noise to data), and an Euler step from t down to
t' < t is x_t' = x_t + v (t - t') / T (``step``). The x0 estimate of a velocity is x_t + s v, and the velocity of an
x0 estimate (x0_hat - x_t) / s, so samplers keep nnugen's ``denoise(x_t, t) -> x0_hat`` signature. Tensors are
(B, C, *spatial) with 2 or 3 spatial axes; t (B,) is a LongTensor in [0, T] (T itself, pure noise, at sampling).
Timesteps are drawn uniformly without MONAI's resolution transform (its ``use_timestep_transform``, made for 3D
latents against a 32^3 base size), so 2D and 3D patches of any size see the same noise levels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from nnugen.diffusion.broadcast import append_dims, working_dtype
from nnugen.diffusion.noise import randn_like
from nnugen.diffusion.parameterisation import Denoiser
from nnugen.diffusion.training_input import TrainingInput


def rflow_scheduler(num_train_timesteps: int):
    """MONAI's RFlowScheduler with T training timesteps, discrete, uniform t, no resolution transform."""
    from monai.networks.schedulers import RFlowScheduler  # MONAI imported on use: diffusion/ imports light

    if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be an integer >= 1, got {num_train_timesteps!r}")
    return RFlowScheduler(num_train_timesteps=num_train_timesteps, use_discrete_timesteps=True,
                          sample_method="uniform", use_timestep_transform=False)


def rflow_training_input(x0: Tensor, num_train_timesteps: int, noise: Tensor | None = None,
                         generator: torch.Generator | None = None) -> TrainingInput:
    """t from MONAI's ``sample_timesteps`` (U{0, ..., T - 1}, torch's global generator as MONAI draws it), eps ~
    N(0, I) from ``generator``, x_t from MONAI's ``add_noise``: x_t = (1 - t/T) x0 + (t/T) eps; x0 (B, C, *spatial)."""
    scheduler = rflow_scheduler(num_train_timesteps)
    t = scheduler.sample_timesteps(x0).long()
    noise = randn_like(x0, generator) if noise is None else noise
    if noise.shape != x0.shape:
        raise ValueError(f"noise shape {tuple(noise.shape)} must equal x0 shape {tuple(x0.shape)}")
    return TrainingInput(scheduler.add_noise(x0, noise, t), t, noise, x0)


def rflow_velocity_target(x0: Tensor, eps: Tensor) -> Tensor:
    """MONAI's velocity target v = x0 - eps (d x_t / d s = eps - x0, integrated from s = 1 down to 0)."""
    dtype = working_dtype(x0, eps)
    return x0.to(dtype) - eps.to(dtype)


def rflow_mse_loss(output: Tensor, x0: Tensor, eps: Tensor) -> Tensor:
    """Scalar MSE of the predicted velocity (B, C, *spatial) against x0 - eps (Liu et al. 2023 eq. 1)."""
    if output.shape != x0.shape:
        raise ValueError(f"output shape {tuple(output.shape)} must equal x0 shape {tuple(x0.shape)}")
    return (output - rflow_velocity_target(x0, eps)).pow(2).mean()


def _fraction(t: Tensor, num_train_timesteps: int, like: Tensor) -> Tensor:
    return append_dims(t.to(like.device, working_dtype(like)) / num_train_timesteps, like.ndim)


def rflow_x0(velocity: Tensor, x_t: Tensor, t: Tensor, num_train_timesteps: int) -> Tensor:
    """x0_hat = x_t + (t/T) v (MONAI's ``pred_original_sample``); velocity, x_t (B, C, *spatial), t (B,)."""
    dtype = working_dtype(velocity, x_t)
    return x_t.to(dtype) + _fraction(t, num_train_timesteps, x_t) * velocity.to(dtype)


def rflow_velocity(x0_hat: Tensor, x_t: Tensor, t: Tensor, num_train_timesteps: int) -> Tensor:
    """v = (x0_hat - x_t) / (t/T), the velocity whose x0 estimate is x0_hat; t > 0 (B,)."""
    dtype = working_dtype(x0_hat, x_t)
    return (x0_hat.to(dtype) - x_t.to(dtype)) / _fraction(t, num_train_timesteps, x_t)


def rflow_denoiser(model_fn: Callable[[Tensor, Tensor], Tensor], num_train_timesteps: int,
                   clip: tuple[float, float] | None = None) -> Denoiser:
    """Wrap a velocity network ``model_fn(x_t, t) -> v`` as ``denoise(x_t, t) -> x0_hat`` (clamped to ``clip``)."""
    if clip is not None and not clip[0] < clip[1]:
        raise ValueError(f"clip must be (low, high) with low < high, got {clip}; or pass None for no clipping")

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        x0_hat = rflow_x0(model_fn(x_t, t), x_t, t, num_train_timesteps)
        return x0_hat if clip is None else x0_hat.clamp(clip[0], clip[1])

    return denoise
