"""One case's ensemble: member k is sampled with seed ``case_seed + k`` whether the members are averaged inside the
network or predicted one by one for the uncertainty maps (as member k of the case's ensemble, so a shared first step
is shared in both), so both modes give the same mean; non-finite output is
refused naming the case. A tiny untrained DiffusionSegmenter stands in for a model, and a one-tile stand-in for
nnU-Net's predictor (whose sliding window is nnU-Net's business)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from nnugen.config import DiffusionSettings, SamplerSettings
from nnugen.inference.ensemble_prediction import NonFiniteProbabilities, predict_case
from nnugen.models.diffusion_segmenter import DiffusionSegmenter
from nnugen.networks import TimeConditionedUNet

CLASSES = 3
SPATIAL = {"2d": (8, 8), "3d": (4, 8, 8)}


class SoftmaxLabels:
    def apply_inference_nonlin(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=0)


class OneTilePredictor:
    """``predict_logits_from_preprocessed_data`` as nnU-Net's predictor has it for an image of one tile; records the
    (seed, first member, seeds) the network was set to at each call."""

    def __init__(self, network: torch.nn.Module, output: torch.Tensor | None = None):
        self.network, self.output, self.calls = network.eval(), output, []
        self.label_manager = SoftmaxLabels()

    @torch.inference_mode()
    def predict_logits_from_preprocessed_data(self, data: torch.Tensor) -> torch.Tensor:
        request = self.network.sampling_request
        self.calls.append((request.seed, request.first_member, request.sampler.seeds))
        return self.network(data[None])[0] if self.output is None else self.output.clone()


def segmenter(dim: str, sampler: str = "ddim") -> DiffusionSegmenter:
    torch.manual_seed(0)
    n = len(SPATIAL[dim])
    denoiser = TimeConditionedUNet(1 + CLASSES, CLASSES, features_per_stage=(4, 8), kernel_sizes=((3,) * n,) * 2,
                                   strides=((1,) * n, (2,) * n), n_conv_per_stage=(1, 1), n_conv_per_stage_decoder=(1,))
    diffusion = DiffusionSettings(timesteps=5, model_output="x0", recycling=True, mse_weight=0.0)
    return DiffusionSegmenter(denoiser, CLASSES, diffusion,
                              SamplerSettings(name=sampler, steps=2, seeds=1, shared_first_step=sampler == "ddpm"))


def image(dim: str) -> torch.Tensor:
    return torch.randn((1, *SPATIAL[dim]), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("dim", SPATIAL)
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])  # ddpm as planned for segmentation: a shared first step
def test_members_use_the_same_seeds_in_both_modes(dim, sampler):
    network = segmenter(dim, sampler)
    predictor = OneTilePredictor(network)
    together = predict_case(predictor, network, image(dim), "case", seed=10, members=3, with_uncertainty=False)
    one_by_one = predict_case(predictor, network, image(dim), "case", seed=10, members=3, with_uncertainty=True)
    assert predictor.calls == [(10, 0, 3), (10, 0, 1), (10, 1, 1), (10, 2, 1)]
    assert together.maps is None and together.logits.shape == (CLASSES, *SPATIAL[dim])
    torch.testing.assert_close(one_by_one.logits.softmax(0), together.logits.softmax(0), rtol=1e-4, atol=1e-5)
    entropy, variance = one_by_one.maps
    assert one_by_one.maps.shape == (2, *SPATIAL[dim])
    assert (entropy >= 0).all() and (entropy <= math.log(CLASSES) + 1e-6).all()
    assert variance.max() > 0, "the members should differ: each is sampled from its own noise"


def test_a_case_leaves_no_sampling_settings_behind_for_the_next():
    # found end to end: the second case of a run was sampled with one member after the first reset seeds=1
    network = segmenter("2d")
    predictor = OneTilePredictor(network)
    # as nnugen_predict --ensemble-size 2 does; each case reads its ensemble size from here
    with network.sampling(replace(network.planned_sampler, seeds=2)):
        before = network.sampling_request
        for seed in (7, 20):
            predict_case(predictor, network, image("2d"), "case", seed, network.sampling_request.sampler.seeds, True)
            assert network.sampling_request == before
    assert predictor.calls == [(7, 0, 1), (7, 1, 1), (20, 0, 1), (20, 1, 1)]
    assert network.sampling_request.sampler == network.planned_sampler


def test_the_sampling_block_restores_the_settings_after_an_exception():
    network = segmenter("2d")
    before = network.sampling_request
    with pytest.raises(RuntimeError, match="inside"):
        with network.sampling(replace(network.planned_sampler, steps=1, seeds=3), seed=9):
            assert network.sampling_request.seed == 9 and network.sampling_request.sampler.seeds == 3
            with network.sampling(seed=4):  # nested: keeps the outer settings, changes the seed only
                assert network.sampling_request.sampler.steps == 1 and network.sampling_request.seed == 4
                raise RuntimeError("inside")
    assert network.sampling_request == before


@pytest.mark.parametrize("dim", SPATIAL)
def test_same_seed_same_prediction_other_seed_other_noise(dim):
    network = segmenter(dim)
    predictor = OneTilePredictor(network)
    first, again, other = (predict_case(predictor, network, image(dim), "case", seed, 2, True) for seed in (5, 5, 6))
    assert torch.equal(first.logits, again.logits) and torch.equal(first.maps, again.maps)
    assert not torch.equal(first.maps, other.maps)


def test_identical_members_have_zero_variance_and_the_entropy_of_their_probabilities():
    logits = torch.log(torch.tensor([0.5, 0.25, 0.25])).reshape(3, 1, 1).expand(3, 2, 2)
    network = segmenter("2d")
    prediction = predict_case(OneTilePredictor(network, logits), network, torch.zeros(1, 2, 2), "case", 0, 4, True)
    expected_entropy = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    torch.testing.assert_close(prediction.maps[0], torch.full((2, 2), expected_entropy))
    assert torch.equal(prediction.maps[1], torch.zeros(2, 2))


@pytest.mark.parametrize("with_uncertainty", [False, True])
def test_non_finite_output_is_refused_naming_the_case(with_uncertainty):
    network = segmenter("2d")
    output = torch.zeros(3, 2, 2)
    output[1, 0, 0] = float("nan")
    with pytest.raises(NonFiniteProbabilities, match="case liver_007: .* not finite"):
        predict_case(OneTilePredictor(network, output), network, torch.zeros(1, 2, 2), "liver_007", 0, 2,
                     with_uncertainty)
