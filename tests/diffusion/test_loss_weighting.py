"""Min-SNR-gamma weights (Hang et al. 2023) against hand-computed values, diffusers' compute_snr, and the x0-space
identity that makes the three parameterisations' weights one weighting."""

from __future__ import annotations

import pytest
import torch

from nnugen.config import DiffusionSettings
from nnugen.diffusion import alphas_cumprod, make_betas, predict_x0, training_target
from nnugen.diffusion.loss_weighting import loss_weights, min_snr_weights, signal_to_noise
from nnugen.diffusion.target_loss import target_mse_loss

# abar = 0.9, 0.5, 0.1: SNR = 9, 1, 1/9; min(SNR, 5) = 5, 1, 1/9
ABAR = torch.tensor([0.9, 0.5, 0.1], dtype=torch.float64)
HAND = {
    "x0": [5.0, 1.0, 1 / 9],  # min(SNR, gamma)
    "eps": [5 / 9, 1.0, 1.0],  # min(SNR, gamma) / SNR
    "v": [5 / 10, 1 / 2, (1 / 9) / (10 / 9)],  # min(SNR, gamma) / (SNR + 1)
}


def test_snr_by_hand() -> None:
    torch.testing.assert_close(signal_to_noise(ABAR), torch.tensor([9.0, 1.0, 1 / 9], dtype=torch.float64))


@pytest.mark.parametrize("kind", ["x0", "eps", "v"])
def test_min_snr_weights_by_hand(kind: str) -> None:
    torch.testing.assert_close(min_snr_weights(ABAR, kind, gamma=5.0), torch.tensor(HAND[kind], dtype=torch.float64))


@pytest.mark.parametrize("kind", ["eps", "v"])
def test_min_snr_weights_match_diffusers(kind: str) -> None:
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    # nnugen's float64 alpha-bar in diffusers' scheduler (its own float32 cumprod differs by round-off only)
    scheduler.alphas_cumprod = alphas_cumprod(make_betas("linear", 1000))
    t = torch.tensor([0, 10, 250, 500, 999])
    snr = compute_snr(scheduler, t)
    clipped = torch.stack([snr, 5.0 * torch.ones_like(snr)], dim=1).min(dim=1)[0]
    # train_text_to_image.py: eps divides by snr, v_prediction by snr + 1
    reference = clipped / snr if kind == "eps" else clipped / (snr + 1)
    weights = min_snr_weights(scheduler.alphas_cumprod[t], kind).float()  # compute_snr returns float32
    torch.testing.assert_close(weights, reference, rtol=1e-6, atol=0)


def test_three_parameterisations_weight_the_same_x0_error() -> None:
    """w_kind ||out - target_kind||^2 = min(SNR, gamma) ||x0_hat - x0||^2 per sample, for the same x0_hat."""
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64), torch.randn(3, 2, 4, 4, generator=gen,
                                                                                        dtype=torch.float64)
    x_t = ABAR.sqrt().view(3, 1, 1, 1) * x0 + (1 - ABAR).sqrt().view(3, 1, 1, 1) * eps
    x0_hat = x0 + 0.1 * torch.randn(3, 2, 4, 4, generator=gen, dtype=torch.float64)
    x0_error = (x0_hat - x0).pow(2).flatten(1).mean(1)
    for kind in ("x0", "eps", "v"):
        # the output of this kind whose x0 estimate is x0_hat
        eps_hat = (x_t - ABAR.sqrt().view(3, 1, 1, 1) * x0_hat) / (1 - ABAR).sqrt().view(3, 1, 1, 1)
        output = training_target(kind, x0_hat, eps_hat, ABAR)
        torch.testing.assert_close(predict_x0(output, x_t, ABAR, kind), x0_hat)
        error = (output - training_target(kind, x0, eps, ABAR)).pow(2).flatten(1).mean(1)
        torch.testing.assert_close(min_snr_weights(ABAR, kind) * error, ABAR.new_tensor(HAND["x0"]) * x0_error)


def test_weighted_loss_is_the_hand_weighted_mean() -> None:
    gen = torch.Generator().manual_seed(1)
    output, x0, eps = (torch.randn(3, 1, 2, 2, generator=gen, dtype=torch.float64) for _ in range(3))
    weights = min_snr_weights(ABAR, "eps")
    per_sample = [((output[i] - eps[i]) ** 2).mean() for i in range(3)]
    hand = sum(w * e for w, e in zip(weights.tolist(), per_sample)) / 3
    torch.testing.assert_close(target_mse_loss(output, "eps", x0, eps, ABAR, weights), hand)
    # uniform weighting is the plain mean, as before the setting existed
    assert loss_weights("uniform", "eps", ABAR) is None
    torch.testing.assert_close(target_mse_loss(output, "eps", x0, eps, ABAR, torch.ones(3, dtype=torch.float64)),
                               target_mse_loss(output, "eps", x0, eps, ABAR))


def test_bad_settings_say_what_to_do() -> None:
    with pytest.raises(ValueError, match="sample_weights must have shape"):
        target_mse_loss(torch.zeros(3, 1, 2, 2), "eps", torch.zeros(3, 1, 2, 2), torch.zeros(3, 1, 2, 2), ABAR,
                        torch.ones(2))
    with pytest.raises(ValueError, match="unknown loss weighting"):
        loss_weights("snr", "eps", ABAR)
    with pytest.raises(ValueError, match="diffusion.loss_weighting"):
        DiffusionSettings(loss_weighting="min-snr")
    with pytest.raises(ValueError, match="diffusion.min_snr_gamma"):
        DiffusionSettings(min_snr_gamma=0.0)
    assert DiffusionSettings().loss_weighting == "uniform" and DiffusionSettings().min_snr_gamma == 5.0
