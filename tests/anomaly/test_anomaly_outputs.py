"""What nnugen_predict writes for an anomaly model, below the CLI: the packed output of one sliding-window pass
splits back into exactly the logits, map and counterfactual of the ordinary calls; the variance across seeds; the
counterfactual back in the input's units; the file names."""

from __future__ import annotations

from dataclasses import replace
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
    view = model.packed_view()
    packed = view(image)
    assert packed.shape == (1, view.channels, 16, 16) and view.channels == 4 + channels
    parts = view.unpack(packed[0])
    result = model.run(image)
    assert torch.equal(parts.logits, model(image)[0])  # what nnUNetv2_predict averages
    assert torch.equal(parts.map, result.map[0])  # the continuous map, small components kept
    assert torch.allclose(parts.counterfactual, result.counterfactuals.mean(0)[0])
    per_seed = result.members.reshape(2, 2, 1, 1, 16, 16).mean(1)  # seed-major: strengths of seed 0 first
    assert torch.allclose(parts.variance, per_seed.var(0, unbiased=False)[0], atol=1e-7)
    assert parts.variance.max() > 0


def test_one_seed_has_zero_variance_and_the_settings_are_an_argument_of_the_call():
    model = _segmenter(1, seeds=1)
    image = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    view = model.packed_view()
    assert view.unpack(view(image)[0]).variance.abs().max() == 0
    sampler = replace(model.planned_sampler, steps=3, seeds=2)
    with model.sampling(sampler, seed=4, strengths=(0.3,)) as request:
        assert model.sampling_request is request and request.sampler.seeds == 2 and request.seed == 4
        assert model.strengths == (0.3,) and model.run(image).counterfactuals.shape[0] == 2
        with model.sampling(seed=5):  # blocks nest: the inner one keeps the outer settings it does not say
            assert model.sampling_request.sampler.steps == 3 and model.strengths == (0.3,)
    assert model.sampling_request.sampler == model.planned_sampler and model.strengths == (0.25, 0.5)
    with pytest.raises(ValueError, match=r"strength must be a number in \(0, 1\]"):
        model.sampling(strengths=(0.5, 1.5)).__enter__()
    for other in (replace(sampler, name="ddpm"), replace(sampler, eta=0.5)):
        with pytest.raises(ValueError, match="deterministic DDIM"):
            model.sampling(other).__enter__()
    assert model.sampling_request.sampler == model.planned_sampler and model.strengths == (0.25, 0.5)


def test_the_sampling_block_restores_the_settings_after_an_exception_inside():
    model = _segmenter(1, seeds=1)
    image = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    before = model.sampling_request
    with pytest.raises(RuntimeError, match="inside"), model.sampling(replace(model.planned_sampler, seeds=3), seed=9,
                                                                      strengths=(0.75,)):
        raise RuntimeError("inside")
    assert model.sampling_request is before and model.sampling_request.seed == 0 and model.strengths == (0.25, 0.5)
    with model.sampling(seed=9), pytest.raises(ValueError, match="expected"):  # the outer block survives an inner one
        with model.sampling(strengths=(0.5,)):
            model.packed_view().unpack(torch.zeros(1, 16, 16))
    assert model.sampling_request is before
    seeded = model.anomaly_map(image)
    with model.sampling(seed=9):
        assert not torch.equal(model.anomaly_map(image), seeded)  # the seed is the noise
    assert torch.equal(model.anomaly_map(image), seeded)


def test_a_model_without_threshold_refuses_to_segment_and_the_chosen_one_thresholds_the_map():
    model = _segmenter(1, seeds=1)
    model.threshold_chosen.fill_(False)
    image = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="no threshold yet"):
        model(image)
    with pytest.raises(ValueError, match="no threshold yet"):
        model.packed_view()(image)
    raw = model.map_view()(image)[:, 1:2]
    assert torch.equal(raw, model.map_view()(image)[:, 1:2])  # seeded: the same map every call
    threshold = float(raw.median())
    overridden = model.packed_view(threshold)  # a threshold given to the view needs none stored
    assert torch.equal(overridden.unpack(overridden(image)[0]).map, raw[0])
    model.set_threshold(threshold)
    logits = model(image)
    expected = model.anomaly_map(image, threshold) > threshold
    assert torch.equal(logits.argmax(1, keepdim=True) == 1, expected)
    assert torch.equal(overridden(image)[:, :2], model.packed_view()(image)[:, :2])


def test_the_views_share_the_segmenters_state_dict_and_mode():
    model, other = _segmenter(1, seeds=1), _segmenter(1, seeds=1)
    other.set_threshold(0.5)
    with torch.no_grad():
        next(other.generator.parameters()).add_(1.0)
    for view in (model.map_view(), model.packed_view(), model.training_loss()):
        assert list(view.state_dict()) == list(model.state_dict())  # the segmenter's keys, as checkpoints hold them
    view = model.packed_view(0.1)
    view.load_state_dict(other.state_dict())  # what nnU-Net's predictor does for each fold
    assert float(model.threshold) == 0.5 and view.threshold == 0.1
    assert torch.equal(next(model.generator.parameters()), next(other.generator.parameters()))
    loss = model.training_loss().train()
    assert model.training and model.generator.training
    assert list(loss.parameters()) == list(model.parameters())
    value = loss(torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(3)))
    assert value.ndim == 0 and torch.isfinite(value)


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
