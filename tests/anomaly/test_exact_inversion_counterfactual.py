"""The anomaly task's inversion mode with fixed-point (near-exact) DDIM inversion, ``anomaly.inversion_iterations``.

With the exact denoiser of Gaussian data (tests/samplers/test_exact_inversion.py derives it) and converged inversion,
the decoded counterfactual is the input itself, lesion included: the DDIM ODE is a bijection, so whatever an
inversion-based counterfactual removes comes from the plain inversion's error and from the model's imperfection,
not from the ODE. Batched strengths keep the one-at-a-time results, and the model reads the setting from its plans.
"""

from __future__ import annotations

import pytest
import torch

from nnugen.anomaly.counterfactual import counterfactual, seeded_counterfactuals
from nnugen.config import (
    AnomalySettings,
    ChannelIntensity,
    DenoiserSettings,
    DiffusionSettings,
    GenerationSettings,
    IntensitySettings,
    SamplerSettings,
    TaskSettings,
    TrainingSettings,
)
from nnugen.diffusion import alphas_cumprod, make_betas, partial_start, sampling_timesteps
from nnugen.models.anomaly_segmenter import AnomalySegmenter
from nnugen.models.image_generator import ImageGenerator
from nnugen.samplers import ddim, ddim_invert

MU, S = 0.0, 0.5
ABAR = alphas_cumprod(make_betas("linear", 1000))
STRENGTHS, STEPS = (0.002, 0.5, 1.0), 6


def gaussian_denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[x0 | x_t] for x0 ~ N(mu, s^2 I), per sample t (B,)."""
    a = ABAR[t].to(x_t.dtype).view(-1, *(1,) * (x_t.ndim - 1))
    return MU + S**2 * a.sqrt() / (a * S**2 + 1 - a) * (x_t - a.sqrt() * MU)


def _lesioned() -> torch.Tensor:
    image = S * torch.randn(2, 1, 12, 12, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    image[:, :, 3:7, 4:8] += 1.5  # a bright "lesion" the Gaussian model never saw
    return image


@pytest.mark.parametrize("steps", [5, 20])
def test_converged_inversion_gives_back_the_input_and_plain_inversion_does_not(steps):
    image = _lesioned()
    exact = counterfactual(gaussian_denoiser, image, ABAR, 0.5, steps, inversion=True, inversion_iterations=500,
                           inversion_tolerance=1e-13)
    plain = counterfactual(gaussian_denoiser, image, ABAR, 0.5, steps, inversion=True)
    assert float((exact - image).abs().max()) < 1e-4
    assert float((plain - image).abs().max()) > 100 * float((exact - image).abs().max())


@pytest.mark.parametrize("max_batch", [1, 64])
def test_batched_strengths_equal_one_at_a_time(max_batch):
    image = _lesioned()
    expected = []
    for strength in STRENGTHS:
        t0 = partial_start(strength, ABAR.shape[0])
        grid = sampling_timesteps(ABAR.shape[0], min(STEPS, t0 + 1), start=t0)
        z = ddim_invert(gaussian_denoiser, image, ABAR, grid.flip(0), iterations=30, tolerance=1e-6)
        expected.append(ddim(gaussian_denoiser, z, ABAR, grid))
    batched = seeded_counterfactuals(gaussian_denoiser, image, ABAR, STRENGTHS, STEPS, inversion=True,
                                     max_batch=max_batch, inversion_iterations=30, inversion_tolerance=1e-6)
    torch.testing.assert_close(batched, torch.stack(expected), rtol=1e-12, atol=1e-12)


def test_settings_are_checked():
    assert AnomalySettings.from_dict({}).inversion_iterations == 0  # plans written before the setting: plain
    for bad in ({"inversion_iterations": -1}, {"inversion_iterations": 2.5}, {"inversion_tolerance": -1.0}):
        with pytest.raises(ValueError, match="inversion_"):
            AnomalySettings.from_dict(bad)
    with pytest.raises(ValueError, match="iterations must be an integer >= 0"):
        counterfactual(gaussian_denoiser, _lesioned(), ABAR, 0.5, 5, inversion=True, inversion_iterations=-1)


def test_the_model_reads_the_iterations_from_its_settings():
    """A tiny 2D anomaly model, 1 seed, 1 strength, 3 steps, tolerance 0 (every iteration runs): each inversion step
    costs 1 + N denoiser calls, each decoding step 1."""
    torch.manual_seed(0)
    dims, patch = 2, (16, 16)
    denoiser = DenoiserSettings(features_per_stage=(8, 16), kernel_sizes=((3,) * dims,) * 2,
                                strides=((1,) * dims, (2,) * dims), n_conv_per_stage=(1, 1),
                                n_conv_per_stage_decoder=(1,), time_embed_dim=16)
    calls = {}
    for iterations in (0, 2):
        anomaly = AnomalySettings(strengths=(0.5,), inversion=True, inversion_iterations=iterations,
                                  inversion_tolerance=0.0, max_batch=1)
        task = TaskSettings(training=TrainingSettings(ema_decay=0.0), denoiser=denoiser,
                            diffusion=DiffusionSettings(schedule="cosine"), sampler=SamplerSettings(steps=3, seeds=1),
                            anomaly=anomaly, generation=GenerationSettings(mode="image"))
        generator = ImageGenerator.from_settings(task, 1, 2, patch)
        model = AnomalySegmenter(generator, anomaly, IntensitySettings(channels=(ChannelIntensity(low=-2.0,
                                                                                                   high=3.0),)), 2)
        model_output, counted = generator.model_output, []

        def counting(x_t, t, condition, use_ema=False, model_output=model_output, counted=counted):
            counted.append(x_t.shape[0])
            return model_output(x_t, t, condition, use_ema)

        generator.model_output = counting
        model.eval().run(torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(3)))
        calls[iterations] = len(counted)
    assert calls[0] == 3 + 3 and calls[2] == 3 * (1 + 2) + 3
