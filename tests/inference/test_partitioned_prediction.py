"""One case's sliding-window tiles shared among gloo processes (issue 19, part 2; partitioned_prediction.py): 2
spawned processes give rank 0 the logits of 1 process to 1e-5, for a plain network's logits (2D, 2D slices of a 3D
case, 3D) and a diffusion segmenter's ensemble with and without its uncertainty maps (the moments pass, mirroring on);
the other rank returns nothing. One process equals nnU-Net's own sliding window to its float16 buffer's rounding.
Partitions a case cannot use are refused in one line."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
from gloo_ranks import ranks_of
from torch import nn

from nnugen.config import DiffusionSettings, SamplerSettings
from nnugen.inference.ensemble_prediction import predict_case
from nnugen.inference.moments_pass import moments_predictor
from nnugen.inference.partitioned_prediction import PartitionedPredictor, PredictionPartition, case_partition
from nnugen.inference.partitioned_sampling import RankPlace
from nnugen.models.diffusion_segmenter import DiffusionSegmenter
from nnugen.networks import TimeConditionedUNet

WORLD = 2
CLASSES = 3
PATCH = {"2d": (16, 16), "3d": (8, 8, 8)}
CASES = {  # name: (configuration, model, uncertainty, mirroring, case shape (C, *spatial), grid)
    "baseline_2d": ("2d", "plain", False, True, (1, 1, 24, 40), (1, 2)),
    "baseline_2d_slices": ("2d", "plain", False, False, (1, 3, 40, 20), (2, 1)),
    "baseline_3d": ("3d", "plain", False, True, (1, 12, 20, 16), (1, 2, 1)),
    "diffusion_2d": ("2d", "diffusion", False, False, (1, 1, 24, 40), (1, 2)),
    "diffusion_2d_uncertainty": ("2d", "diffusion", True, True, (1, 1, 40, 24), (2, 1)),
}


def _network(configuration: str, model: str) -> nn.Module:
    torch.manual_seed(0)
    n = len(PATCH[configuration])
    if model == "plain":  # a baseline's logits: depends on the tile through its zero padding
        conv = nn.Conv2d if n == 2 else nn.Conv3d
        return nn.Sequential(conv(1, 8, 3, padding=1), nn.Tanh(), conv(8, CLASSES, 3, padding=1)).eval()
    denoiser = TimeConditionedUNet(1 + CLASSES, CLASSES, features_per_stage=(4, 8), kernel_sizes=((3,) * n,) * 2,
                                   strides=((1,) * n, (2,) * n), n_conv_per_stage=(1, 1), n_conv_per_stage_decoder=(1,))
    diffusion = DiffusionSettings(timesteps=10, model_output="x0", recycling=False, mse_weight=0.0)
    return DiffusionSegmenter(denoiser, CLASSES, diffusion, SamplerSettings(name="ddpm", steps=2, seeds=3)).eval()


def _predictor(network: nn.Module, configuration: str, mirroring: bool, place: RankPlace | None, grid=None):
    """A model folder's predictor as ``load_diffusion_predictor`` leaves it (one fold, 3 labels); partitioned when
    ``place`` is given, else nnU-Net's own."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    patch = PATCH[configuration]
    plans = PlansManager({"dataset_name": "Dataset001_X", "plans_name": "nnugenPlans",
                          "image_reader_writer": "SimpleITKIO", "configurations": {configuration: {
                              "patch_size": list(patch), "spacing": [1.0] * len(patch), "architecture": {}}}})
    settings = dict(tile_step_size=0.5, use_mirroring=mirroring, perform_everything_on_device=False,
                    device=torch.device("cpu"), allow_tqdm=False)
    predictor = nnUNetPredictor(**settings) if place is None else \
        PartitionedPredictor(PredictionPartition(grid, place), **settings)
    labels = {"labels": {"background": 0, "a": 1, "b": 2}, "channel_names": {"0": "T2"}, "file_ending": ".nii.gz"}
    predictor.manual_initialization(network, plans, plans.get_configuration(configuration),
                                    [{k: v.clone() for k, v in network.state_dict().items()}], labels, "T",
                                    tuple(range(len(patch))) if mirroring else None)
    return predictor


def _data(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(3))


def _predict(name: str, place: RankPlace) -> dict[str, torch.Tensor]:
    """One case: the logits (and maps) as ``nnugen_predict`` computes them, for ``CASES[name]``; in one piece when
    ``place`` is a world of 1."""
    configuration, model, uncertainty, mirroring, shape, grid = CASES[name]
    grid = grid if place.world_size > 1 else (1,) * len(grid)
    network = _network(configuration, model)
    predictor = _predictor(network, configuration, mirroring, place, grid)
    data = _data(shape)
    if model == "plain":
        return {"logits": predictor.predict_logits_from_preprocessed_data(data)}
    moments = moments_predictor(predictor, network) if uncertainty else None
    with network.sampling(network.planned_sampler):
        prediction = predict_case(predictor, network, data, name, seed=5, members=3, with_uncertainty=uncertainty,
                                  moments_predictor=moments)
    return {"logits": prediction.logits, **({"maps": prediction.maps} if uncertainty else {})}


def _one_process(name: str) -> dict[str, torch.Tensor]:
    return _predict(name, RankPlace(0, 1, torch.device("cpu"), timedelta(seconds=60), 1))


def _rank(rank: int) -> dict:
    place = RankPlace(rank, WORLD, torch.device("cpu"), timedelta(seconds=60), 1)
    return {name: _predict(name, place) for name in CASES}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    return ranks_of(_rank, WORLD, tmp_path_factory, "partitioned_prediction")


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_processes_predict_the_logits_of_one(ranks, name):
    expected = _one_process(name)
    shape = CASES[name][4][1:]
    for key, value in expected.items():
        assert value.shape[1:] == shape
        torch.testing.assert_close(ranks[0][name][key], value, rtol=0, atol=1e-5)
        assert ranks[1][name][key].numel() == 0, "rank 1 returns nothing: rank 0 writes"
    if "maps" in expected:
        assert expected["maps"][1].max() > 1e-3, "the members should differ"


@pytest.mark.parametrize("name", ["baseline_2d", "baseline_2d_slices", "baseline_3d"])
def test_one_process_is_nnunets_sliding_window_to_its_float16_buffer(name):
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    configuration, _, _, mirroring, shape, _ = CASES[name]
    network = _network(configuration, "plain")
    predictor = _predictor(network, configuration, mirroring, None)
    nnunet = predictor.predict_logits_from_preprocessed_data(_data(shape)).float().softmax(0)
    mine = _one_process(name)["logits"].softmax(0)
    weights = torch.zeros(shape[1:])
    for slicer in predictor._internal_get_sliding_window_slicers(shape[1:]):
        weights[slicer[1:]] += compute_gaussian(PATCH[configuration], 1. / 8, 10, device=torch.device("cpu"))
    # nnU-Net adds the weighted tiles in float16: about 3 digits where the weights are not near float16's subnormals
    inside = weights >= 1e-3
    torch.testing.assert_close(mine[:, inside], nnunet[:, inside], rtol=0, atol=2e-3)
    assert inside.float().mean() > 0.8


def test_the_windows_of_a_2d_configuration_keep_every_slice_on_each_rank():
    partition = case_partition((1, 2), (3, 24, 32), (16, 16), 0.5)  # 2 x 3 windows per slice
    assert partition.patch == (1, 16, 16) and partition.grid == (1, 1, 2)
    assert [len(p.windows) for p in partition.pieces] == [3 * 2 * 1, 3 * 2 * 2]
    assert {w[0] for p in partition.pieces for w in p.windows} == {0, 1, 2}


@pytest.mark.parametrize("grid, spatial, patch, message", [
    ((2, 1), (1, 16, 40), (16, 16), "this case has 1 x 4 sliding windows (preprocessed shape (16, 40), patch "
                                    "(16, 16), -step_size 0.5), fewer than the pieces along an axis"),
    ((3, 1, 1), (12, 20, 16), (8, 8, 8), "this case has 2 x 4 x 3 sliding windows"),
])
def test_a_case_with_fewer_windows_than_pieces_is_refused(grid, spatial, patch, message):
    with pytest.raises(ValueError, match=r"^--partition ") as error:
        case_partition(grid, spatial, patch, 0.5)
    assert message in str(error.value) and "nothing of it was written" in str(error.value)
