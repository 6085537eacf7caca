"""The erosion of the map's region chosen on validation cases (``anomaly.erode_search``): the smallest width that
removes a bright rim along the body's edge, none when lesions lie at the edge; the model's map at every width comes
from one set of counterfactuals and equals its map at that width; the chosen width is kept in the model (buffer
``erosion``, in its state dict) and used by its post-processing; checkpoints from before the choice still load."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from nnugen.anomaly import choose_erosion, erode_mask
from nnugen.config import (
    AnomalySettings,
    ChannelIntensity,
    DiffusionSettings,
    GenerationSettings,
    IntensitySettings,
    SamplerSettings,
)
from nnugen.models.anomaly_segmenter import AnomalySegmenter
from nnugen.models.image_generator import ImageGenerator
from nnugen.networks import TimeConditionedUNet


def _square(width: int) -> np.ndarray:
    """The 24 x 24 body of a 32 x 32 case eroded by ``width``."""
    region = np.zeros((32, 32), bool)
    region[4 + width:28 - width, 4 + width:28 - width] = True
    return region


def _maps(anomaly: np.ndarray, widest: int) -> np.ndarray:
    """(widest + 1, 32, 32): ``anomaly`` masked by the body eroded by 0..widest."""
    return np.stack([np.where(_square(k), anomaly, 0.0) for k in range(widest + 1)]).astype(np.float32)


def test_the_smallest_width_that_removes_the_rim_is_chosen():
    lesion = np.zeros((32, 32), bool)
    lesion[14:18, 14:18] = True
    rim = _square(0) & ~_square(2)
    anomaly = np.where(rim, 0.9, 0.0) + np.where(lesion, 0.8, 0.0)  # the rim brighter than the lesion
    voxels, dices = choose_erosion([_maps(anomaly, 4)], [lesion])
    assert voxels == 2  # 3 and 4 reach the same Dice: the smaller wins the tie
    assert dices[2] == dices[3] == dices[4] == pytest.approx(1.0)
    assert dices[0] == pytest.approx(2 * 16 / (2 * 16 + int(rim.sum())))  # lesion and rim: the best threshold
    assert dices[0] < dices[1] < dices[2]


def test_lesions_at_the_edge_keep_the_region_whole():
    lesion = np.zeros((32, 32), bool)
    lesion[4:8, 12:20] = True  # touching the body's edge
    voxels, dices = choose_erosion([_maps(np.where(lesion, 0.8, 0.0), 3)], [lesion])
    assert voxels == 0 and dices[0] == pytest.approx(1.0) and dices[3] < dices[1] < 1.0


def test_no_lesion_or_cases_at_different_erosions_are_refused():
    lesion = np.zeros((32, 32), bool)
    with pytest.raises(ValueError, match="validation cases with lesions"):
        choose_erosion([_maps(np.zeros((32, 32)), 2)], [lesion])
    lesion[10:14, 10:14] = True
    with pytest.raises(ValueError, match="same erosions"):
        choose_erosion([_maps(np.zeros((32, 32)), 2), _maps(np.zeros((32, 32)), 3)], [lesion, lesion])


def _segmenter(search: int) -> AnomalySegmenter:
    torch.manual_seed(0)
    denoiser = TimeConditionedUNet(1, 1, features_per_stage=(8, 16), kernel_sizes=((3, 3),) * 2,
                                   strides=((1, 1), (2, 2)), n_conv_per_stage=(1, 1), n_conv_per_stage_decoder=(1,),
                                   norm="instance", time_embed_dim=16, attention_stages=(), attention_heads=1,
                                   dropout=0.0)
    generator = ImageGenerator(denoiser, 1, 2, (16, 16), DiffusionSettings(schedule="cosine"),
                               SamplerSettings(steps=2, seeds=2), GenerationSettings(mode="image"), 0.99)
    intensity = IntensitySettings(channels=(ChannelIntensity(low=-2.0, high=3.0),))
    settings = AnomalySettings(strengths=(0.5,), erode_region=1, erode_search=search)
    return AnomalySegmenter(generator, settings, intensity, 2).eval()


def _image() -> torch.Tensor:
    image = torch.full((1, 1, 16, 16), -1.0)
    image[..., 2:14, 3:13] = torch.rand(12, 10, generator=torch.Generator().manual_seed(3)) + 1.0
    return image


def test_the_maps_at_every_erosion_come_from_one_set_of_counterfactuals():
    model, image = _segmenter(search=3), _image()
    maps = model.erosion_search_view(3)(image)
    assert maps.shape == (1, 4, 16, 16)
    for k in range(4):
        model.set_erosion(k)
        assert torch.allclose(maps[:, k:k + 1], model.anomaly_map(image), atol=1e-6), k
    assert (maps[:, 3] > 0).sum() < (maps[:, 0] > 0).sum()


def test_the_chosen_erosion_is_kept_in_the_model_and_used_by_its_postprocessing():
    model, image = _segmenter(search=4), _image()
    assert model.postprocessing.erode_region == 1  # not chosen yet: the planned erode_region
    model.set_erosion(3)
    assert model.postprocessing == replace(model.postprocessing, erode_region=3)
    reloaded = _segmenter(search=4)
    reloaded.load_state_dict(model.state_dict())
    assert reloaded.postprocessing.erode_region == 3
    eroded = model.body(image)
    model.set_erosion(0)
    whole = model.body(image)
    assert torch.equal(eroded, erode_mask(whole, 3)) and 0 < int(eroded.sum()) < int(whole.sum())


def test_checkpoints_from_before_the_choice_load_with_the_plans_erosion():
    older = _segmenter(search=0).state_dict()
    del older["erosion"]  # what checkpoint_final.pth held before the erosion was chosen with the threshold
    model = _segmenter(search=4)
    model.load_state_dict(older)  # strict, as nnU-Net's predictor loads it
    assert int(model.erosion) == -1 and model.postprocessing.erode_region == 1


def test_the_body_of_an_input_padded_by_nnunet_is_the_body_of_the_case():
    model = _segmenter(search=0)
    case = _image()[..., 1:15, 2:14]  # 14 x 12, smaller than the 16 x 16 patch
    case[..., :, :] += 0.02 * torch.rand(case.shape, generator=torch.Generator().manual_seed(4))  # noisy background
    padded = torch.nn.functional.pad(case, (2, 2, 1, 1))  # the predictor's padding: the preprocessed 0
    body = model.body(padded)
    assert torch.equal(body, torch.nn.functional.pad(model.body(case), (2, 2, 1, 1)))
    assert not bool(body[..., :1, :].any()) and int(body.sum()) < int(model.body(case).numel())
    # the map is masked to that body
    assert bool((model.anomaly_map(padded)[~body] == 0).all())
