"""Pseudo-healthy counterfactuals: partially noise an image, then denoise it with a model trained on healthy data only.

The diffusion model, trained on healthy scans, cannot reproduce a lesion it never saw, so denoising a partially
noised scan gives back a "healthy version" of it; the residual to the input marks the anomaly.

- Partial noising at a strength (SDEdit, Meng et al. 2022; pDDPM / cDDPM, Behrendt et al. 2023; THOR, Bercea et al.
  2024): x_t0 = q_sample(image, t0) with t0 = partial_start(strength, T), then deterministic DDIM (Song et al. 2021,
  eta = 0) from t0 down to 0. strength 1 is pure noise (no information from the input survives).
- Simplex noise instead of Gaussian noise for that one draw (AnoDDPM, Wyatt et al. 2022): see simplex_noise.py.
- DDIM inversion (Song et al. 2021 sec. 4.3): encode the image deterministically up to t0 with ddim_invert, decode
  with ddim; no random noise at all, so the counterfactual stays closer to the input (less healthy tissue changes,
  but also less of the lesion removed).

Symbols: image = x_0 (B, C, *spatial) in the model's intensity range; alphas_cumprod = abar (T,); t0 the training
index partial noising starts at; ``denoise(x_t, t) -> x0_hat`` the samplers' contract (see nnugen.diffusion.Denoiser).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

from nnugen.anomaly.simplex_noise import simplex_noise_like
from nnugen.diffusion import Denoiser, batch_timesteps, partial_start, q_sample, randn_like, sampling_timesteps
from nnugen.samplers import ddim, ddim_invert

NOISES = ("gaussian", "simplex")


def check_strength(strength: float) -> float:
    """Return ``strength`` as a float if it lies in (0, 1]; ValueError saying what to pass otherwise."""
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0 < strength <= 1:
        raise ValueError(f"strength must be a number in (0, 1] (the fraction of the noise schedule to noise up to; "
                         f"1 = pure noise, pDDPM/AnoDDPM use 0.25 to 0.5), got {strength!r}")
    return float(strength)


def _check_inputs(image: Tensor, alphas_cumprod: Tensor, steps: int, noise: str) -> None:
    if image.ndim < 3:
        raise ValueError(f"image must be (B, C, *spatial), got shape {tuple(image.shape)}")
    if alphas_cumprod.ndim != 1 or alphas_cumprod.numel() < 1:
        raise ValueError(f"alphas_cumprod must be the 1D (T,) alpha-bar of the training schedule, got shape "
                         f"{tuple(alphas_cumprod.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1 (DDIM steps from t0 down to 0), got {steps!r}")
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES} (simplex: AnoDDPM), got {noise!r}")


@torch.no_grad()
def counterfactual(
    denoise: Denoiser,
    image: Tensor,
    alphas_cumprod: Tensor,
    strength: float,
    steps: int,
    noise: str = "gaussian",
    inversion: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The pseudo-healthy image (B, C, *spatial) for ``image`` (B, C, *spatial).

    Args:
        denoise: ``denoise(x_t, t) -> x0_hat`` of a model trained on healthy cases only.
        image: the input, in the intensity range the model was trained in.
        alphas_cumprod: (T,) alpha-bar of the training schedule.
        strength: in (0, 1]; noising starts at t0 = partial_start(strength, T) = round(strength * T) - 1.
        steps: DDIM steps from t0 down to 0, evenly spaced (sampling_timesteps); capped at t0 + 1, one per
            training step, so a configured step count works at every strength.
        noise: "gaussian" (pDDPM, THOR) or "simplex" (AnoDDPM) for the partial-noising draw; ignored with inversion.
        inversion: encode with deterministic DDIM inversion up to t0 instead of drawing noise.
        generator: the only source of randomness (the partial-noising draw); the result is a function of it.
    """
    strength = check_strength(strength)
    _check_inputs(image, alphas_cumprod, steps, noise)
    train_timesteps = alphas_cumprod.shape[0]
    t0 = partial_start(strength, train_timesteps)
    timesteps = sampling_timesteps(train_timesteps, min(steps, t0 + 1), start=t0)
    if inversion:
        # 1. Deterministic encoding x_0 -> x_t0 along the DDIM ODE over the same grid, visited upwards.
        x_t0 = ddim_invert(denoise, image, alphas_cumprod, timesteps.flip(0))
    else:
        # 1. x_t0 = sqrt(abar_t0) x_0 + sqrt(1 - abar_t0) eps (Ho et al. 2020 eq. 4), eps Gaussian or simplex.
        eps = randn_like(image, generator) if noise == "gaussian" else simplex_noise_like(image, generator)
        x_t0 = q_sample(image, batch_timesteps(t0, image), alphas_cumprod, eps)
    # 2. Deterministic DDIM (eta = 0) from t0 to the clean estimate: the pseudo-healthy image.
    return ddim(denoise, x_t0, alphas_cumprod, timesteps, eta=0.0)


@torch.no_grad()
def multi_strength_counterfactuals(
    denoise: Denoiser,
    image: Tensor,
    alphas_cumprod: Tensor,
    strengths: Sequence[float],
    steps: int,
    noise: str = "gaussian",
    inversion: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Counterfactuals at several strengths, stacked as (S, B, C, *spatial) in the order of ``strengths``.

    Small strengths keep healthy detail but leave large lesions in place; large strengths remove them but alter
    healthy tissue too; averaging the residuals over strengths (ensemble_map) trades the two off (Behrendt et al.
    2023 and Bercea et al. 2024 combine several noise levels). One generator serves all strengths in turn.
    """
    if isinstance(strengths, (int, float)) or len(strengths) == 0:
        raise ValueError(f"strengths must be a non-empty sequence of numbers in (0, 1], e.g. (0.25, 0.5, 0.75); got "
                         f"{strengths!r}")
    for strength in strengths:
        check_strength(strength)
    return torch.stack([counterfactual(denoise, image, alphas_cumprod, s, steps, noise, inversion, generator)
                        for s in strengths])
