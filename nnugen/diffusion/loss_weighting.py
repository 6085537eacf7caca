"""Per-sample weights of the denoising MSE: min-SNR-gamma (Hang et al. 2023, "Efficient Diffusion Training via
Min-SNR Weighting Strategy", eq. 9-11).

SNR(t) = abar_t / (1 - abar_t). The loss of each parameterisation is, in x0 space, SNR-weighted already:
||eps - eps_hat||^2 = SNR ||x0 - x0_hat||^2 and ||v - v_hat||^2 = (SNR + 1) ||x0 - x0_hat||^2 (Salimans & Ho 2022).
Min-SNR wants min(SNR, gamma) ||x0 - x0_hat||^2 for all three, so the weight on the output's MSE is
min(SNR, gamma) for x0, min(SNR, gamma) / SNR for eps and min(SNR, gamma) / (SNR + 1) for v (as diffusers'
train_text_to_image.py computes them with ``compute_snr``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nnugen.config import LOSS_WEIGHTINGS
from nnugen.diffusion.parameterisation import check_parameterisation


def signal_to_noise(abar_t: Tensor) -> Tensor:
    """SNR(t) = abar_t / (1 - abar_t), same shape as abar_t (Kingma et al. 2021); float64 stays float64."""
    abar_t = abar_t.to(torch.promote_types(abar_t.dtype, torch.float32))
    return abar_t / (1 - abar_t)


def min_snr_weights(abar_t: Tensor, kind: str, gamma: float = 5.0) -> Tensor:
    """Hang et al. 2023 weights (B,) on the MSE of a network output of ``kind`` ("x0", "eps", "v") at abar_t (B,)."""
    check_parameterisation(kind)
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0 (the paper uses 5), got {gamma}")
    snr = signal_to_noise(abar_t)
    clipped = snr.clamp(max=gamma)
    if kind == "x0":
        return clipped
    if kind == "eps":
        return clipped / snr
    return clipped / (snr + 1)


def loss_weights(weighting: str, kind: str, abar_t: Tensor, gamma: float = 5.0) -> Tensor | None:
    """Weights (B,) for ``weighting`` ("uniform": None, the plain mean; "min_snr": min_snr_weights)."""
    if weighting not in LOSS_WEIGHTINGS:
        raise ValueError(f"unknown loss weighting {weighting!r}; choose one of {LOSS_WEIGHTINGS}")
    return None if weighting == "uniform" else min_snr_weights(abar_t, kind, gamma)
