"""Latent-mode anomaly maps: the counterfactual is made in the autoencoder's latent space and compared with the
autoencoded input, not the raw input, so reconstruction error does not leak into the map."""

from __future__ import annotations

import pytest
import torch

from nnugen.config import (
    AnomalySettings,
    ChannelIntensity,
    DenoiserSettings,
    DiffusionSettings,
    GenerationSettings,
    IntensitySettings,
    SamplerSettings,
)
from nnugen.diffusion.broadcast import schedule_at
from nnugen.models.anomaly_segmenter import AnomalySegmenter
from nnugen.models.image_generator import ImageGenerator
from nnugen.networks import TimeConditionedUNet
from nnugen.networks.autoencoder import Autoencoder

LATENT_DENOISER = DenoiserSettings(features_per_stage=(8,), kernel_sizes=((3, 3),), strides=((1, 1),),
                                   n_conv_per_stage=(1,), n_conv_per_stage_decoder=())


def _latent_segmenter(strengths=(0.3, 0.6)) -> AnomalySegmenter:
    torch.manual_seed(0)
    autoencoder = Autoencoder(in_channels=1, features_per_stage=[8, 16], strides=[[1, 1], [2, 2]], latent_channels=2,
                              kind="kl", codebook_size=16).eval()
    denoiser = TimeConditionedUNet(2, 2, features_per_stage=(8, 16), kernel_sizes=((3, 3),) * 2,
                                   strides=((1, 1), (2, 2)), n_conv_per_stage=(1, 1), n_conv_per_stage_decoder=(1,),
                                   norm="instance", time_embed_dim=16, attention_stages=(), attention_heads=1,
                                   dropout=0.0)
    generator = ImageGenerator(denoiser, 2, 2, (8, 8), DiffusionSettings(schedule="cosine"), SamplerSettings(steps=3),
                               GenerationSettings(mode="image"), 0.99)
    settings = AnomalySettings(space="latent", latent_denoiser=LATENT_DENOISER, strengths=strengths, median_filter=0,
                               mask_to_body=False)
    intensity = IntensitySettings(channels=(ChannelIntensity(low=-2.0, high=3.0),))
    return AnomalySegmenter(generator, settings, intensity, 2, autoencoder=autoencoder).eval()


def test_a_perfect_latent_counterfactual_gives_a_zero_map_although_the_autoencoder_is_lossy():
    model = _latent_segmenter()
    model.set_latent_scale(0.7)
    image = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    x, _ = model.split(image)
    codec = model.codec()
    clean = codec.encode(x)
    abar = model.generator.alphas_cumprod

    def oracle(x_t, t, condition, use_ema=False):  # the eps that makes the x0 estimate the clean latent exactly
        a = schedule_at(abar, t, x_t)
        return (x_t - a.sqrt() * clean) / (1 - a).sqrt()

    model.generator.model_output = oracle
    result = model.run(image)
    autoencoded = codec.decode(clean, (16, 16))
    assert (x - autoencoded).abs().mean() > 0.05  # an untrained autoencoder: large reconstruction error
    assert result.map.abs().max() < 1e-4  # measured against the autoencoded input, none of it shows
    assert torch.allclose(result.counterfactuals, model.intensity.to_preprocessed(autoencoded).expand_as(
        result.counterfactuals), atol=1e-4)


def test_latent_mode_handles_images_the_downsampling_does_not_divide():
    model = _latent_segmenter(strengths=(0.5,))
    model.set_latent_scale(1.0)
    image = torch.randn(1, 1, 15, 13, generator=torch.Generator().manual_seed(2))
    result = model.run(image)
    assert result.map.shape == (1, 1, 15, 13) and result.counterfactuals.shape == (1, 1, 1, 15, 13)
    assert torch.isfinite(result.map).all() and model.image_channels == 1 and model.packed_view().channels == 5
    model.train()
    assert model.generator.training and not model.autoencoder.training  # frozen: always encodes as at inference


def test_latent_mode_needs_an_autoencoder_its_scale_and_a_latent_denoiser():
    model = _latent_segmenter()
    with pytest.raises(ValueError, match="no latent scale factor"):
        model.run(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="needs an autoencoder"):
        AnomalySegmenter(model.generator, model.anomaly, IntensitySettings(channels=(ChannelIntensity(),)), 2)
    with pytest.raises(ValueError, match="latent space needs a latent denoiser"):
        AnomalySettings(space="latent")
