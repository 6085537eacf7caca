"""What the network predicts ("x0", "eps" or "v") and every conversion between them, in one place.

Symbols: x_t = sqrt(abar) x0 + sqrt(1 - abar) eps (Ho et al. 2020) and v = sqrt(abar) eps - sqrt(1 - abar) x0
(Salimans & Ho 2022). All tensors are (B, C, *spatial); abar_t is (B,) or already broadcastable, e.g. (B, 1, ..., 1).

Every conversion computes and returns in ``working_dtype`` of its inputs: float32 for float32 and half-precision
(autocast) network outputs, float64 for float64, so mixed precision changes the network, not the diffusion math.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from nnugen.diffusion.broadcast import append_dims, schedule_at, working_dtype

PARAMETERISATIONS = ("x0", "eps", "v")

Denoiser = Callable[[Tensor, Tensor], Tensor]
"""`denoise(x_t, t) -> x0_hat`: x_t (B, C, *spatial), t (B,) long training indices, x0_hat of x_t's shape, in at
least float32 (see x0_denoiser)."""


def check_parameterisation(kind: str) -> str:
    """Return `kind` if it is one of PARAMETERISATIONS, else raise ValueError listing them."""
    if kind not in PARAMETERISATIONS:
        raise ValueError(f"unknown parameterisation {kind!r}; choose one of {PARAMETERISATIONS}")
    return kind


def _abar(abar_t: Tensor, like: Tensor, dtype: torch.dtype) -> Tensor:
    # (B,) per-sample values are the common case; anything else must already broadcast against x_t.
    if abar_t.ndim == 1 and like.ndim > 1:
        abar_t = append_dims(abar_t, like.ndim)
    return abar_t.to(device=like.device, dtype=dtype)


def predict_x0(output: Tensor, x_t: Tensor, abar_t: Tensor, kind: str) -> Tensor:
    """x0 from a network output of the given kind (Ho et al. 2020 eq. 15; Salimans & Ho 2022 for v)."""
    check_parameterisation(kind)
    dtype = working_dtype(output, x_t)
    output, x_t = output.to(dtype), x_t.to(dtype)
    if kind == "x0":
        return output
    abar = _abar(abar_t, x_t, dtype)
    if kind == "eps":
        return (x_t - (1 - abar).sqrt() * output) / abar.sqrt()
    return abar.sqrt() * x_t - (1 - abar).sqrt() * output


def predict_eps(output: Tensor, x_t: Tensor, abar_t: Tensor, kind: str) -> Tensor:
    """eps from a network output of the given kind (inverting x_t = sqrt(abar) x0 + sqrt(1 - abar) eps)."""
    check_parameterisation(kind)
    dtype = working_dtype(output, x_t)
    output, x_t = output.to(dtype), x_t.to(dtype)
    if kind == "eps":
        return output
    abar = _abar(abar_t, x_t, dtype)
    if kind == "x0":
        return (x_t - abar.sqrt() * output) / (1 - abar).sqrt()
    return (1 - abar).sqrt() * x_t + abar.sqrt() * output


def training_target(kind: str, x0: Tensor, eps: Tensor, abar_t: Tensor) -> Tensor:
    """What a network of the given kind should output for x_t = q_sample(x0, t, eps) (v: Salimans & Ho 2022)."""
    check_parameterisation(kind)
    dtype = working_dtype(x0, eps)
    x0, eps = x0.to(dtype), eps.to(dtype)
    if kind == "x0":
        return x0
    if kind == "eps":
        return eps
    abar = _abar(abar_t, x0, dtype)
    return abar.sqrt() * eps - (1 - abar).sqrt() * x0


def x0_denoiser(
    model_fn: Callable[[Tensor, Tensor], Tensor],
    alphas_cumprod: Tensor,
    kind: str,
    clip: tuple[float, float] | None = None,
) -> Denoiser:
    """Wrap `model_fn(x_t, t) -> output of kind` as `denoise(x_t, t) -> x0_hat` (the k-diffusion denoiser idea).

    Samplers only ever see x0 estimates; `clip` clamps them (e.g. (-1, 1) for data scaled to that range). The
    estimates come back in ``working_dtype`` (float32 for a half-precision output under autocast), so a sampler's
    state x stays float32 while the network runs in fp16 / bf16.
    """
    check_parameterisation(kind)
    if clip is not None and not clip[0] < clip[1]:
        raise ValueError(f"clip must be (low, high) with low < high, got {clip}; or pass None for no clipping")

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        output = model_fn(x_t, t)
        x0_hat = predict_x0(output, x_t, schedule_at(alphas_cumprod, t, x_t), kind)
        return x0_hat if clip is None else x0_hat.clamp(clip[0], clip[1])

    return denoise
