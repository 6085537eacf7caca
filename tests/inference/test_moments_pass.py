"""Ensemble and uncertainty maps in one sliding window (moments_pass.py). Where one tile covers the image the pass
equals the old member-by-member path; through nnU-Net's real predictor (overlapping Gaussian-weighted tiles,
mirroring) it equals the documented formula, sum_j w_j mean_k p_k^(j) and sum_j w_j Var_k p_k^(j), computed here from
the tiles with nnU-Net's own slicers and Gaussian; the model folder's predictor is left as it was."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch

from nnugen.config import DiffusionSettings, SamplerSettings
from nnugen.inference.ensemble_prediction import predict_case
from nnugen.inference.moments_pass import MomentsView, moments_predictor
from nnugen.inference.uncertainty import predictive_entropy
from nnugen.models.diffusion_segmenter import DiffusionSegmenter
from nnugen.networks import TimeConditionedUNet

CLASSES = 3
SPATIAL = {"2d": (8, 8), "3d": (4, 8, 8)}
SAMPLERS = [SamplerSettings(name="ddim", steps=3), SamplerSettings(name="ddim", steps=3, eta=1.0),
            SamplerSettings(name="ddpm", steps=3), SamplerSettings(name="dpm_solver++", steps=3)]


def segmenter(dim: str) -> DiffusionSegmenter:
    torch.manual_seed(0)
    n = len(SPATIAL[dim])
    denoiser = TimeConditionedUNet(1 + CLASSES, CLASSES, features_per_stage=(4, 8), kernel_sizes=((3,) * n,) * 2,
                                   strides=((1,) * n, (2,) * n), n_conv_per_stage=(1, 1), n_conv_per_stage_decoder=(1,))
    diffusion = DiffusionSettings(timesteps=10, model_output="x0", recycling=False, mse_weight=0.0)
    return DiffusionSegmenter(denoiser, CLASSES, diffusion, SamplerSettings(name="ddim", steps=3)).eval()


class SoftmaxLabels:
    def apply_inference_nonlin(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), dim=0)


class OneTile:
    """nnU-Net's predictor for an image of exactly one tile, without mirroring: the network's output, in float32."""

    def __init__(self, network: torch.nn.Module):
        self.network, self.label_manager = network, SoftmaxLabels()

    @torch.inference_mode()
    def predict_logits_from_preprocessed_data(self, data: torch.Tensor) -> torch.Tensor:
        return self.network(data[None])[0]


@pytest.mark.parametrize("dim", SPATIAL)
@pytest.mark.parametrize("sampler", SAMPLERS, ids=lambda s: f"{s.name}-eta{s.eta}")
def test_one_tile_moments_pass_equals_the_member_by_member_path(dim, sampler):
    network = segmenter(dim)
    data = torch.randn((1, *SPATIAL[dim]), generator=torch.Generator().manual_seed(1))
    with network.sampling(sampler):
        old = predict_case(OneTile(network), network, data, "case", seed=10, members=4, with_uncertainty=True)
        new = predict_case(OneTile(network), network, data, "case", seed=10, members=4, with_uncertainty=True,
                           moments_predictor=OneTile(MomentsView(network)))
    torch.testing.assert_close(new.logits.softmax(0), old.logits.softmax(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(new.maps, old.maps, rtol=0, atol=1e-6)
    assert old.maps[1].max() > 1e-3, "the members should differ"


def _predictor(network: DiffusionSegmenter, mirroring: bool):
    """A model folder's predictor as ``load_diffusion_predictor`` leaves it: one fold, patch 16 x 16, 3 labels."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager({"dataset_name": "Dataset001_X", "plans_name": "nnugenPlans",
                          "image_reader_writer": "SimpleITKIO", "configurations": {"2d": {
                              "patch_size": [16, 16], "spacing": [1.0, 1.0], "architecture": {}}}})
    predictor = nnUNetPredictor(tile_step_size=0.5, use_mirroring=mirroring, perform_everything_on_device=False,
                                device=torch.device("cpu"), allow_tqdm=False)
    labels = {"labels": {"background": 0, "a": 1, "b": 2}, "channel_names": {"0": "T2"}, "file_ending": ".nii.gz"}
    predictor.manual_initialization(network, plans, plans.get_configuration("2d"),
                                    [{k: v.clone() for k, v in network.state_dict().items()}], labels, "T",
                                    (0, 1) if mirroring else None)
    return predictor


def _gaussian() -> torch.Tensor:
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    return compute_gaussian((16, 16), sigma_scale=1. / 8, value_scaling_factor=10, device=torch.device("cpu"))


def _weighted(predictor, data: torch.Tensor) -> torch.Tensor:
    """Voxels whose summed Gaussian weight is at least 1e-3 (of 10 at a tile's centre). Elsewhere, along the image's
    border, the weights come near float16 subnormals (down to ~1e-6 at a corner) and nnU-Net's float16 buffer keeps a
    digit or two of any prediction, logits or moments alike; there the paths differ by up to a few 1e-2."""
    weights = torch.zeros(data.shape[1:])
    for slicer in predictor._internal_get_sliding_window_slicers(data.shape[1:]):
        weights[slicer[1:]] += _gaussian()
    return weights >= 1e-3


@torch.no_grad()
def _formula(predictor, network: DiffusionSegmenter, data: torch.Tensor, mirroring: bool) -> torch.Tensor:
    """sum_j w_j [mean_k p_k^(j), Var_k p_k^(j)] / sum_j w_j over nnU-Net's tiles j (mirror-averaged), float64."""
    gaussian = _gaussian()
    total = torch.zeros((2 * CLASSES, *data.shape[1:]), dtype=torch.float64)
    weights = torch.zeros(data.shape[1:], dtype=torch.float64)
    flips = [()] + ([c for i in (1, 2) for c in itertools.combinations((2, 3), i)] if mirroring else [])
    for slicer in predictor._internal_get_sliding_window_slicers(data.shape[1:]):
        tile = data[slicer][None]
        moments = 0
        for axes in flips:
            members = network.sample_probabilities(tile.flip(axes) if axes else tile).double()
            moments = moments + torch.cat([members.mean(0), members.var(0, correction=0)], dim=1)[0].flip(
                [a - 1 for a in axes])
        total[slicer] += moments / len(flips) * gaussian
        weights[slicer[1:]] += gaussian
    return total / weights


@pytest.mark.parametrize("mirroring", [False, True])
def test_the_real_predictor_stitches_the_documented_moments(mirroring):
    network = segmenter("2d")
    predictor = _predictor(network, mirroring)
    label_manager, parameters = predictor.label_manager, predictor.list_of_parameters
    window = moments_predictor(predictor, network)
    data = torch.randn((1, 1, 24, 20), generator=torch.Generator().manual_seed(3))  # 2 x 2 overlapping tiles
    with network.sampling(replace(network.planned_sampler, name="ddpm")):
        prediction = predict_case(predictor, network, data, "case", seed=5, members=3, with_uncertainty=True,
                                  moments_predictor=window)
        with network.sampling(replace(network.planned_sampler, name="ddpm", seeds=3), seed=5):
            expected = _formula(predictor, network, data, mirroring).float()
    assert predictor.label_manager is label_manager and predictor.network is network
    assert predictor.list_of_parameters is parameters and window.label_manager.num_segmentation_heads == 6
    mean = expected[:CLASSES] / expected[:CLASSES].sum(0)
    inside = _weighted(predictor, data)  # nnU-Net accumulates the tiles in float16: about 3 significant digits
    torch.testing.assert_close(prediction.logits.softmax(0)[:, inside], mean[:, inside], rtol=0, atol=2e-3)
    torch.testing.assert_close(prediction.maps[0][inside], predictive_entropy(mean)[inside], rtol=0, atol=5e-3)
    torch.testing.assert_close(prediction.maps[1][inside], expected[CLASSES:].mean(0)[inside], rtol=0, atol=1e-4)
    assert prediction.maps[1].max() > 2e-3 and inside.float().mean() > 0.9


def test_without_overlap_the_real_predictor_matches_the_member_by_member_path():
    network = segmenter("2d")
    predictor = _predictor(network, mirroring=False)
    data = torch.randn((1, 1, 16, 16), generator=torch.Generator().manual_seed(4))  # one tile
    with network.sampling(replace(network.planned_sampler, eta=0.5)):
        old = predict_case(predictor, network, data, "case", seed=2, members=3, with_uncertainty=True)
        new = predict_case(predictor, network, data, "case", seed=2, members=3, with_uncertainty=True,
                           moments_predictor=moments_predictor(predictor, network))
    # float16 buffers: the old path stores log p, the new one p
    inside = _weighted(predictor, data)
    torch.testing.assert_close(new.logits.softmax(0)[:, inside], old.logits.softmax(0)[:, inside], rtol=0, atol=2e-3)
    torch.testing.assert_close(new.maps[:, inside], old.maps[:, inside], rtol=0, atol=5e-3)
