"""The anomaly model trains on the noise it restores with (AnoDDPM trains with simplex noise, Wyatt et al. 2022)."""

import pytest
import torch

import nnugen.models.image_generator as image_generator
from nnugen.anomaly import simplex_noise
from nnugen.config import AnomalySettings, DenoiserSettings, DiffusionSettings, GenerationSettings, TaskSettings
from nnugen.diffusion import alphas_cumprod, make_betas, noisy_training_input, q_sample
from nnugen.diffusion.training_input import sample_training_timesteps
from nnugen.models.image_generator import ImageGenerator


def test_training_input_uses_the_given_noise():
    x0 = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    abar = alphas_cumprod(make_betas("linear", 100))
    eps = simplex_noise(x0.shape, torch.Generator().manual_seed(1))
    noisy = noisy_training_input(x0, abar, torch.Generator().manual_seed(2), noise=eps)
    t = sample_training_timesteps(2, 100, torch.Generator().manual_seed(2))
    assert noisy.noise is eps and torch.equal(noisy.t, t)
    torch.testing.assert_close(noisy.x_t, q_sample(x0, t, abar, eps), rtol=0, atol=0)


@pytest.mark.parametrize("noise", ["gaussian", "simplex", "filtered"])
def test_the_generator_draws_its_training_noise_as_anomaly_noise_says(noise, monkeypatch):
    settings = TaskSettings(
        denoiser=DenoiserSettings(features_per_stage=(4, 8), kernel_sizes=((3, 3),) * 2, strides=((1, 1), (2, 2)),
                                  n_conv_per_stage=(1, 1), n_conv_per_stage_decoder=(1,), time_embed_dim=8),
        diffusion=DiffusionSettings(timesteps=10), generation=GenerationSettings(mode="image"),
        anomaly=AnomalySettings(noise=noise))
    generator = ImageGenerator.from_settings(settings, 1, 2, (8, 8))
    drawn: list[tuple[str, tuple[int, ...]]] = []

    def recording(kind, like, generator=None):
        drawn.append((kind, tuple(like.shape)))
        return torch.zeros_like(like)

    monkeypatch.setattr(image_generator, "partial_noise_like", recording)
    loss = generator(torch.zeros(3, 1, 8, 8))
    assert generator.noise == noise and torch.isfinite(loss)
    assert drawn == ([] if noise == "gaussian" else [(noise, (3, 1, 8, 8))])
