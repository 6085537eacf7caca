"""Rectified-flow sampling with Euler steps (Liu et al. 2023), each step MONAI's ``RFlowScheduler.step``.

The function is stateless from outside: the MONAI scheduler it steps with is built inside the call and dropped after
it (MONAI's ``step`` reads ``num_inference_steps``, set by ``set_timesteps``), so two calls never share state.
"""

from __future__ import annotations

import torch
from torch import Tensor

from nnugen.diffusion import Denoiser, batch_timesteps
from nnugen.diffusion.noise import Generators
from nnugen.diffusion.rectified_flow import rflow_scheduler, rflow_velocity
from nnugen.samplers.signature import Callback


def rflow_timesteps(num_train_timesteps: int, steps: int) -> Tensor:
    """MONAI's ``set_timesteps``: the decreasing LongTensor (steps,) T, T - T/steps, ..., T/steps (rounded)."""
    scheduler = rflow_scheduler(num_train_timesteps)
    scheduler.set_timesteps(steps)  # ValueError unless 1 <= steps <= T
    return scheduler.timesteps.long().cpu()


@torch.no_grad()
def rflow_euler(
    denoise: Denoiser,
    x: Tensor,
    alphas_cumprod: Tensor,
    timesteps: Tensor,
    *,
    generator: Generators = None,
    callback: Callback | None = None,
) -> Tensor:
    """Euler steps of the flow from x at timesteps[0] (pure noise at T) to t = 0; deterministic, ``generator``
    unused. x (B, C, *spatial); ``alphas_cumprod`` (T,): only its length T is read (rectified flow has no alpha-bar,
    the argument keeps the samplers' one signature); ``timesteps``: decreasing, in (0, T], e.g. rflow_timesteps.

    Step i: x0_hat = denoise(x, t_i); v = (x0_hat - x) / (t_i / T); x <- x + v (t_i - t_{i+1}) / T, t_{steps} = 0.
    """
    num_train_timesteps = int(alphas_cumprod.shape[0])
    steps = timesteps.tolist()  # read on the host once, before the loop
    if timesteps.ndim != 1 or not steps or any(not 0 < t <= num_train_timesteps for t in steps) or \
            any(a <= b for a, b in zip(steps, steps[1:])):
        raise ValueError(f"timesteps must be decreasing, in (0, {num_train_timesteps}], got {steps}; build them "
                         "with rflow_timesteps")
    scheduler = rflow_scheduler(num_train_timesteps)
    scheduler.set_timesteps(len(steps))
    for i, (t, t_next) in enumerate(zip(steps, [*steps[1:], 0])):
        t_batch = batch_timesteps(t, x)
        x0_hat = denoise(x, t_batch)
        x, _ = scheduler.step(rflow_velocity(x0_hat, x, t_batch, num_train_timesteps), t, x, t_next)
        if callback is not None:
            callback(i, x, x0_hat)
    return x
