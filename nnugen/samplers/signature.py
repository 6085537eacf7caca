"""The one signature every sampler shares (k-diffusion style: denoiser in, stateless loop, generator for noise)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from torch import Tensor

from nnugen.diffusion import Denoiser
from nnugen.diffusion.noise import Generators

Callback = Callable[[int, Tensor, Tensor], None]
"""`callback(i, x, x0_hat)` after step i: the new sample and the x0 estimate that step used."""


class Sampler(Protocol):
    """`sampler(denoise, x, alphas_cumprod, timesteps, *, generator, callback) -> x0`.

    denoise: `denoise(x_t, t) -> x0_hat`, t a LongTensor (B,) of training indices (see x0_denoiser).
    x: (B, C, *spatial) sample at timesteps[0]: pure noise, or a partially noised image.
    alphas_cumprod: (T,) alpha-bar of the training schedule.
    timesteps: decreasing LongTensor of training indices (sampling_timesteps), any length >= 1.
    generator: the source of every stochastic step's noise, passed on to ``noise.randn_like``: one
    ``torch.Generator``, or a sequence of n, one per equal chunk of the batch axis, so that n independently seeded
    runs (ensemble members) go through the network as one batch and each chunk equals its own run with its own
    generator. Deterministic samplers ignore it.
    Returns the clean sample, after a last step to abar = 1.
    """

    def __call__(
        self,
        denoise: Denoiser,
        x: Tensor,
        alphas_cumprod: Tensor,
        timesteps: Tensor,
        *,
        generator: Generators = None,
        callback: Callback | None = None,
    ) -> Tensor: ...
