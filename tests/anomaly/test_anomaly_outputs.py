"""What nnugen_predict writes for an anomaly model, below the CLI: the packed output of one sliding-window pass
splits back into exactly the logits, map and counterfactual of the ordinary calls; the variance across seeds; the
counterfactual back in the input's units; the file names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nnugen.config import (
    AnomalySettings,
    ChannelIntensity,
    DiffusionSettings,
    GenerationSettings,
    IntensitySettings,
    SamplerSettings,
)
from nnugen.inference.anomaly_export import anomaly_output_files, linear_fit, to_input_units
from nnugen.models.anomaly_segmenter import AnomalySegmenter
from nnugen.models.image_generator import ImageGenerator
from nnugen.networks import TimeConditionedUNet


def _segmenter(channels: int, seeds: int) -> AnomalySegmenter:
    torch.manual_seed(0)
    denoiser = TimeConditionedUNet(channels, channels, features_per_stage=(8, 16), kernel_sizes=((3, 3),) * 2,
                                   strides=((1, 1), (2, 2)), n_conv_per_stage=(1, 1), n_conv_per_stage_decoder=(1,),
                                   norm="instance", time_embed_dim=16, attention_stages=(), attention_heads=1,
                                   dropout=0.0)
    generator = ImageGenerator(denoiser, channels, 2, (16, 16), DiffusionSettings(schedule="cosine"),
                               SamplerSettings(steps=2, seeds=seeds), GenerationSettings(mode="image"), 0.99)
    intensity = IntensitySettings(channels=(ChannelIntensity(low=-2.0, high=3.0),) * channels)
    model = AnomalySegmenter(generator, AnomalySettings(strengths=(0.25, 0.5), min_component_voxels=4), intensity, 2)
    model.set_threshold(0.05)
    return model.eval()


@pytest.mark.parametrize("channels", [1, 2])
def test_the_packed_output_holds_the_logits_map_and_counterfactual_of_the_ordinary_calls(channels):
    model = _segmenter(channels, seeds=2)
    image = torch.randn(1, channels, 16, 16, generator=torch.Generator().manual_seed(1))
    with model.packed_output():
        packed = model(image)
    assert packed.shape == (1, model.packed_channels, 16, 16) and model.packed_channels == 4 + channels
    parts = model.unpack(packed[0])
    result = model.run(image)
    assert torch.equal(parts.logits, model(image)[0])  # what nnUNetv2_predict averages
    assert torch.equal(parts.map, result.map[0])  # the continuous map, small components kept
    assert torch.allclose(parts.counterfactual, result.counterfactuals.mean(0)[0])
    per_seed = result.members.reshape(2, 2, 1, 1, 16, 16).mean(1)  # seed-major: strengths of seed 0 first
    assert torch.allclose(parts.variance, per_seed.var(0, unbiased=False)[0], atol=1e-7)
    assert parts.variance.max() > 0


def test_one_seed_has_zero_variance_and_the_settings_can_be_overridden():
    model = _segmenter(1, seeds=1)
    image = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    with model.packed_output():
        assert model.unpack(model(image)[0]).variance.abs().max() == 0
    model.set_sampling(steps=3, seeds=2, strengths=(0.3,))
    assert model.generator.sampler.steps == 3 and model.generator.sampler.seeds == 2
    assert model.anomaly.strengths == (0.3,)
    with pytest.raises(ValueError, match=r"strength must be a number in \(0, 1\]"):
        model.set_sampling(strengths=(0.5, 1.5))
    with pytest.raises(ValueError, match="deterministic DDIM"):
        model.set_sampling(name="ddpm")


def test_a_model_without_threshold_refuses_to_segment_and_the_chosen_one_thresholds_the_map():
    model = _segmenter(1, seeds=1)
    model.threshold_chosen.fill_(False)
    image = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="no threshold yet"):
        model(image)
    with model.packed_output(), pytest.raises(ValueError, match="no threshold yet"):
        model(image)
    with model.map_output():
        raw = model(image)[:, 1:2]
        assert torch.equal(raw, model(image)[:, 1:2])  # seeded: the same map every call
    model.set_threshold(float(raw.median()))
    logits = model(image)
    expected = model.anomaly_map(image, float(raw.median())) > float(raw.median())
    assert torch.equal(logits.argmax(1, keepdim=True) == 1, expected)


def test_the_counterfactual_goes_back_to_the_input_units_of_a_linear_normalisation():
    rng = np.random.default_rng(0)
    image = rng.uniform(50, 400, (2, 6, 8, 8)).astype(np.float32)
    inside = np.zeros((6, 8, 8), bool)
    inside[1:5, 1:7, 2:8] = True
    scale, offset = np.array([80.0, 20.0]), np.array([200.0, 90.0])  # per channel: image = scale * z + offset
    normalised = np.where(inside, (image - offset[:, None, None, None]) / scale[:, None, None, None], 0)
    counterfactual = normalised + 0.1
    result = to_input_units(counterfactual, normalised, image, inside)
    expected = scale[:, None, None, None] * counterfactual + offset[:, None, None, None]
    np.testing.assert_allclose(result[:, inside], expected[:, inside], rtol=1e-4)
    np.testing.assert_array_equal(result[:, ~inside], image[:, ~inside])  # outside nnU-Net's crop: the input
    assert linear_fit(np.ones(5), np.arange(5.0)) == (0.0, 2.0)


def test_output_files_of_an_anomaly_case():
    names = [p.name for p in anomaly_output_files(Path("out/c"), ".nii.gz", False, 1, with_variance=True)]
    assert names == ["c.nii.gz", "c_anomaly.nii.gz", "c_anomaly_variance.nii.gz", "c_counterfactual.nii.gz"]
    names = [p.name for p in anomaly_output_files(Path("out/c"), ".mha", True, 2, with_variance=False)]
    assert names == ["c.mha", "c.npz", "c.pkl", "c_anomaly.mha", "c_counterfactual_0000.mha",
                     "c_counterfactual_0001.mha"]
