"""Anatomy-mask conditioning of counterfactual anomaly segmentation, below the CLIs: the segmenter models the image
channels only and uses the mask channel to bound the map (and, with the adapter, as the condition); a new anatomy
adapter gives exactly the base model's counterfactual; the one-line errors for bad settings and a missing or
mismatched base. The whole workflow through the real CLIs is in tests/e2e/test_anomaly_anatomy_e2e.py."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from nnugen.anomaly import anatomy_condition, split_anatomy
from nnugen.config import (
    AnomalySettings,
    ChannelIntensity,
    DenoiserSettings,
    DiffusionSettings,
    GenerationSettings,
    IntensitySettings,
    NnugenSection,
    SamplerSettings,
    TaskSettings,
    TrainingSettings,
)
from nnugen.models.anomaly_segmenter import AnomalySegmenter
from nnugen.models.denoiser_files import denoiser_description, save_denoiser
from nnugen.models.image_generator import ImageGenerator
from nnugen.networks.label_adapter import LabelAdapter

DENOISER = DenoiserSettings(features_per_stage=(8, 16), kernel_sizes=((3, 3),) * 2, strides=((1, 1), (2, 2)),
                            n_conv_per_stage=(1, 1), n_conv_per_stage_decoder=(1,), time_embed_dim=16)
SETTINGS = TaskSettings(training=TrainingSettings(ema_decay=0.0), denoiser=DENOISER,
                        diffusion=DiffusionSettings(schedule="cosine"), sampler=SamplerSettings(steps=2),
                        anomaly=AnomalySettings(strengths=(0.3, 0.6), median_filter=0, mask_to_body=False,
                                                min_component_voxels=0, condition_channel="noNorm"))
IMAGE_INTENSITY, MASK_INTENSITY = ChannelIntensity(low=-2.0, high=3.0), ChannelIntensity("NoNormalization", 0.0, 1.0)
ADAPTER = GenerationSettings(mode="label_adapter", condition_dropout=0.0)


def _segmenter(mask_index: int = 1, generation: GenerationSettings | None = None,
               settings: TaskSettings = SETTINGS) -> AnomalySegmenter:
    """A model of one image channel, with the anatomy mask as input channel ``mask_index`` of two."""
    torch.manual_seed(0)
    task = replace(settings, generation=generation or GenerationSettings(mode="image"))
    generator = ImageGenerator.from_settings(task, 1, 2, (16, 16))  # 2: the mask's one-hot, for the adapter
    channels = [IMAGE_INTENSITY, IMAGE_INTENSITY]
    channels[mask_index] = MASK_INTENSITY
    model = AnomalySegmenter(generator, settings.anomaly, IntensitySettings(channels=tuple(channels)), 2)
    model.set_condition_index(mask_index)
    return model.eval()


def _case(mask_index: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(input (1, 2, 16, 16) with a fractional-border mask in channel ``mask_index``, the mask read as > 0.5)."""
    image = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 3:12, 4:13] = 1.0
    mask[..., 3:12, 4] = 0.4  # interpolation leaves fractional values at the border: below 0.5 is outside
    mask[..., 3:12, 12] = 0.6
    parts = [image, image]
    parts[mask_index] = mask
    return torch.cat(parts, dim=1), mask > 0.5


@pytest.mark.parametrize("mask_index", [0, 1])
def test_the_segmenter_models_the_image_channels_and_bounds_the_map_by_the_mask(mask_index):
    model = _segmenter(mask_index)
    x, inside = _case(mask_index)
    assert model.generator.image_channels == 1 and model.image_channels == 1 and model.packed_view().channels == 5
    assert model.image_channel_indices() == [1 - mask_index]
    image, mask = model.split(x)
    assert torch.equal(mask, inside)
    # the image channel goes through its own intensity map (low -2, high 3), not the mask's
    assert torch.allclose(image, ((x[:, 1 - mask_index:2 - mask_index] + 2) / 5 * 2 - 1).clamp(-1, 1))

    result = model.run(x)
    assert result.counterfactuals.shape == (2, 1, 1, 16, 16)  # strengths x batch x image channels
    assert result.map[~inside].abs().max() == 0 and result.map[inside].abs().max() > 0
    unmasked = _segmenter(mask_index, settings=replace(SETTINGS, anomaly=replace(SETTINGS.anomaly,
                                                                                  mask_to_anatomy=False)))
    assert unmasked.run(x).map[~inside].abs().max() > 0  # the anatomy mask, nothing else, zeroed the outside
    # the mask is no image of the plain model: other values with the same mask > 0.5 give the same map
    brighter = x.clone()
    brighter[:, mask_index][inside[:, 0]] = 3.0
    assert torch.equal(model.run(brighter).map, result.map)
    assert torch.equal(model.body(x), inside)


def test_split_and_condition_follow_one_hot_in_diffusion_space_and_refuse_a_lone_mask():
    from nnugen.diffusion import one_hot

    x, inside = _case()
    image, mask = split_anatomy(x, 1)
    assert torch.equal(image, x[:, :1]) and torch.equal(mask, inside)
    assert torch.equal(anatomy_condition(mask), one_hot(mask.long(), 2, diffusion_space=True))
    with pytest.raises(ValueError, match="at least one image channel"):
        split_anatomy(x[:, 1:], 0)


def _adapter_from(base: AnomalySegmenter) -> AnomalySegmenter:
    model = _segmenter(generation=ADAPTER)
    model.generator.denoiser.load_state_dict(base.generator.denoiser.state_dict())  # the frozen base
    return model


def test_a_new_adapter_gives_the_base_models_counterfactual_and_a_trained_one_follows_the_mask():
    base = _segmenter()
    model = _adapter_from(base)
    assert isinstance(model.generator.adapter, LabelAdapter) and model.generator.adapter.in_channels == 2
    assert not any(p.requires_grad for p in model.generator.denoiser.parameters())
    x, inside = _case()
    for seed in (0, 5):  # every seed and strength: zero-initialised residuals leave the base model as it is
        with model.sampling(seed=seed), base.sampling(seed=seed):
            assert torch.equal(model.run(x).counterfactuals, base.run(x).counterfactuals)

    with torch.no_grad():  # a trained adapter: its last convs are no longer zero
        for stage in model.generator.adapter.stages:
            stage.out.weight.normal_(0, 0.5)
    conditioned = model.run(x).counterfactuals
    assert not torch.allclose(conditioned, base.run(x).counterfactuals)
    shifted = x.clone()
    shifted[:, 1] = torch.roll(x[:, 1], 3, dims=-1)
    assert not torch.allclose(model.run(shifted).counterfactuals, conditioned)  # the mask is the condition


def test_the_adapter_trains_against_the_mask_condition_and_only_the_adapter_learns():
    model = _adapter_from(_segmenter()).train()
    x, inside = _case()
    loss = model.training_loss()(x)  # the image channel, conditioned on the mask's one-hot
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None for p in model.generator.denoiser.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.generator.adapter.parameters())


def test_bad_settings_are_one_line_errors():
    channels = {"0": "T2", "1": "noNorm"}
    settings = SETTINGS.anomaly
    assert settings.condition_index(channels, ("ZScoreNormalization", "NoNormalization")) == 1
    assert replace(settings, condition_channel="").condition_index(channels) is None
    cases = [
        (lambda: replace(settings, condition_channel="cord").condition_index(channels),
         r"'cord' is not exactly one channel of dataset.json \(channels: T2, noNorm\)"),
        (lambda: settings.condition_index({"0": "noNorm", "1": "noNorm"}), "not exactly one channel"),
        (lambda: settings.condition_index({"0": "noNorm"}), "the dataset's only channel"),
        (lambda: replace(settings, condition_channel="T2").condition_index(channels, ("ZScoreNormalization",)),
         "normalises channel 'T2' with ZScoreNormalization .* name the mask's channel noNorm"),
        (lambda: replace(settings, space="latent", latent_denoiser=DENOISER), "works in image space only"),
        (lambda: AnomalySegmenter(_segmenter(generation=ADAPTER).generator, replace(settings, condition_channel=""),
                                  IntensitySettings(channels=(IMAGE_INTENSITY,)), 2),
         "set anomaly.condition_channel"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            call()
        assert "\n" not in str(error.value)
    unset = _segmenter()
    unset.condition_index.fill_(-1)  # a model whose trainer never recorded the channel
    with pytest.raises(ValueError, match="does not know which input channel holds the anatomy mask"):
        unset.run(_case()[0])


def _plans(settings: TaskSettings) -> dict:
    section = NnugenSection(intensity=IntensitySettings(channels=(IMAGE_INTENSITY, MASK_INTENSITY)),
                            tasks={"anomaly": settings})
    return {"dataset_name": "Dataset001_X", "plans_name": "nnugenPlans", "configurations": {"2d": {
        "architecture": {}, "patch_size": [16, 16], "normalization_schemes": ["ZScoreNormalization", "NoNormalization"],
        "nnugen": section.to_dict()}}}


DATASET = {"channel_names": {"0": "T2", "1": "noNorm"}}


def test_the_trainers_build_the_split_model_and_check_the_base_before_anything_is_written(tmp_path, monkeypatch):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnugen.trainers.nnugen_anomaly_trainer import NnugenAnomalyTrainer
    from nnugen.trainers.variants.anomaly_anatomy_adapter import NnugenAnomalyTrainer_anatomyAdapter as Adapter

    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    plans = _plans(SETTINGS)
    manager = PlansManager(plans)
    plain = NnugenAnomalyTrainer.build_network_architecture(manager, manager.get_configuration("2d"), 2, 2)
    adapter = Adapter.build_network_architecture(manager, manager.get_configuration("2d"), 2, 2)
    assert plain.generator.image_channels == adapter.generator.image_channels == 1
    assert plain.generator.adapter is None and adapter.generator.adapter.in_channels == 2
    assert NnugenAnomalyTrainer._read_condition(plans, "2d", 0, DATASET) == (1, None)

    base = tmp_path / "Dataset001_X" / "NnugenAnomalyTrainer__nnugenPlans__2d" / "fold_0"
    with pytest.raises(ValueError, match=r"NnugenAnomalyTrainer__nnugenPlans__2d/fold_0 holds no exported anomaly "
                                         r"model .* nnugen_train ID FOLD CONFIG --task anomaly"):
        Adapter._read_condition(plans, "2d", 0, DATASET)
    base.mkdir(parents=True)
    save_denoiser(plain.generator.denoiser, denoiser_description(SETTINGS, 2, "image"), base)  # channels mismatch
    with pytest.raises(ValueError, match=r"does not match these plans \(image_channels: 2 there, 1 here\)"):
        Adapter._read_condition(plans, "2d", 0, DATASET)
    save_denoiser(plain.generator.denoiser, denoiser_description(SETTINGS, 1, "image"), base)
    index, (folder, weights) = Adapter._read_condition(plans, "2d", 0, DATASET)
    assert index == 1 and folder == base and weights.keys() == plain.generator.denoiser.state_dict().keys()

    without = _plans(replace(SETTINGS, anomaly=replace(SETTINGS.anomaly, condition_channel="")))
    with pytest.raises(ValueError, match="conditions on an anatomy mask: .*anomaly.anomaly.condition_channel=NAME"):
        Adapter._read_condition(without, "2d", 0, DATASET)
    latent = _plans(replace(SETTINGS, anomaly=replace(SETTINGS.anomaly, condition_channel="", space="latent",
                                                      latent_denoiser=DENOISER)))
    with pytest.raises(ValueError, match="NnugenAnomalyTrainer_anatomyAdapter works in image space only"):
        Adapter._read_condition(latent, "2d", 0, DATASET)
    assert not (tmp_path / "Dataset001_X" / "NnugenAnomalyTrainer_anatomyAdapter__nnugenPlans__2d").exists()


def test_the_mask_channel_travels_in_the_state_dict_as_the_predictor_loads_it():
    trained = _segmenter(mask_index=0, generation=ADAPTER)
    rebuilt = _segmenter(generation=ADAPTER)  # as build_network_architecture makes it: the index is not known yet
    rebuilt.condition_index.fill_(-1)
    rebuilt.load_state_dict(trained.state_dict())
    assert rebuilt.anatomy_channel() == 0 and rebuilt.image_channel_indices() == [1]


def test_the_lesion_dataset_can_add_the_body_mask_as_a_nonorm_channel_and_leaves_the_default_alone(tmp_path):
    from nnugen.anomaly import body_mask
    from nnugen.demo.lesion_dataset import ANATOMY_CHANNEL, write_lesion_dataset
    from nnugen.demo.phantom import PhantomSpec, make_phantom_case

    spec = PhantomSpec(shape=(40, 40), spacing=(1.0, 1.0))
    plain = write_lesion_dataset(tmp_path / "plain", 511, "L", 1, 1, 1, seed=2, spec=spec)
    masked = write_lesion_dataset(tmp_path / "masked", 511, "L", 1, 1, 1, seed=2, spec=spec, anatomy_channel=True)

    def read(folder, name: str) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / name)))

    channels = [json.loads((folder / "dataset.json").read_text())["channel_names"] for folder in (plain, masked)]
    assert channels == [spec.channel_names, {**spec.channel_names, "1": "noNorm"}] and ANATOMY_CHANNEL == "noNorm"
    assert sorted(p.name for p in (plain / "imagesTr").iterdir()) == ["L_000_0000.nii.gz", "L_001_0000.nii.gz"]
    for split, index in (("imagesTr", 0), ("imagesTr", 1), ("imagesTs", 2)):
        image = read(masked, f"{split}/L_{index:03d}_0000.nii.gz")
        assert np.array_equal(image, read(plain, f"{split}/L_{index:03d}_0000.nii.gz"))  # the images are unchanged
        mask = read(masked, f"{split}/L_{index:03d}_0001.nii.gz")
        healthy = np.stack(make_phantom_case(spec, np.random.default_rng([2, index]))[0])
        assert set(np.unique(mask)) == {0, 1}
        assert np.array_equal(mask > 0.5, body_mask(healthy[None])[0, 0])  # where the lesions are placed
        label = read(masked, f"{split.replace('images', 'labels')}/L_{index:03d}.nii.gz")
        assert not (label.astype(bool) & (mask < 0.5)).any()

