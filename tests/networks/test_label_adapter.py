"""LabelAdapter (T2I-Adapter, Mou et al. 2023) on the time-conditioned U-Net, in 2D and 3D: residual shapes per stage,
the zero start that reproduces the base model exactly, a frozen base, and classifier-free guidance."""

import pytest
import torch

from nnugen.config import DenoiserSettings, DiffusionSettings, GenerationSettings, SamplerSettings, TaskSettings
from nnugen.models.image_generator import ImageGenerator
from nnugen.networks import TimeConditionedUNet
from nnugen.networks.label_adapter import LabelAdapter

LAYOUTS = {
    "2d": {"features_per_stage": (8, 16, 32), "kernel_sizes": ((3, 3),) * 3, "strides": ((1, 1), (2, 2), (2, 2)),
           "spatial": (16, 24)},
    "3d": {"features_per_stage": (8, 16, 32), "kernel_sizes": ((1, 3, 3), (3, 3, 3), (3, 3, 3)),
           "strides": ((1, 1, 1), (1, 2, 2), (2, 2, 2)), "spatial": (4, 16, 16)},
}
CLASSES = 3


def _denoiser(dim: str) -> tuple[TimeConditionedUNet, tuple[int, ...]]:
    layout = dict(LAYOUTS[dim])
    spatial = layout.pop("spatial")
    torch.manual_seed(0)
    return TimeConditionedUNet(1, 1, n_conv_per_stage=(1, 1, 1), n_conv_per_stage_decoder=(1, 1), **layout), spatial


def _label(spatial: tuple[int, ...], batch: int = 2) -> torch.Tensor:
    label = torch.randint(0, CLASSES, (batch, *spatial), generator=torch.Generator().manual_seed(1))
    return torch.nn.functional.one_hot(label, CLASSES).movedim(-1, 1).float() * 2 - 1


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_residuals_have_each_stages_shape_and_start_at_zero(dim):
    denoiser, spatial = _denoiser(dim)
    adapter = LabelAdapter.for_denoiser(denoiser, CLASSES)
    residuals = adapter(_label(spatial))
    expected = [(2, c, *shape) for c, shape in zip(denoiser.features_per_stage, denoiser.stage_shapes(spatial))]
    assert [tuple(r.shape) for r in residuals] == expected
    assert all(torch.count_nonzero(r) == 0 for r in residuals)


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_a_new_adapter_reproduces_the_base_model_exactly(dim):
    denoiser, spatial = _denoiser(dim)
    adapter = LabelAdapter.for_denoiser(denoiser, CLASSES)
    x, t = torch.randn(2, 1, *spatial), torch.tensor([10, 500])
    torch.testing.assert_close(denoiser(x, t, adapter(_label(spatial))), denoiser(x, t), rtol=0, atol=0)


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_trained_adapter_changes_the_output_and_depends_on_the_label(dim):
    denoiser, spatial = _denoiser(dim)
    adapter = LabelAdapter.for_denoiser(denoiser, CLASSES)
    with torch.no_grad():
        for stage in adapter.stages:
            stage.out.weight.normal_(0, 0.1)
    x, t = torch.randn(2, 1, *spatial), torch.tensor([10, 500])
    base = denoiser(x, t)
    one, other = denoiser(x, t, adapter(_label(spatial))), denoiser(x, t, adapter(-_label(spatial)))
    assert not torch.allclose(one, base) and not torch.allclose(one, other)


def test_wrong_label_channels_are_refused():
    denoiser, spatial = _denoiser("2d")
    with pytest.raises(ValueError, match=r"label must be \(B, 3, \*S\)"):
        LabelAdapter.for_denoiser(denoiser, CLASSES)(torch.zeros(1, 2, *spatial))


def _generator(dim: str, **generation) -> tuple[ImageGenerator, tuple[int, ...]]:
    layout = dict(LAYOUTS[dim])
    spatial = layout.pop("spatial")
    settings = TaskSettings(
        denoiser=DenoiserSettings(**layout, n_conv_per_stage=(1, 1, 1), n_conv_per_stage_decoder=(1, 1),
                                  time_embed_dim=16),
        diffusion=DiffusionSettings(timesteps=100), sampler=SamplerSettings(name="ddim", steps=3),
        generation=GenerationSettings(mode="label_adapter", **generation))
    torch.manual_seed(0)
    return ImageGenerator.from_settings(settings, 1, CLASSES, spatial), spatial


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_adapter_generator_starts_as_its_base_and_trains_the_adapter_only(dim):
    generator, spatial = _generator(dim)
    x, t, label = torch.randn(2, 1, *spatial), torch.tensor([3, 70]), _label(spatial)
    torch.testing.assert_close(generator.model_output(x, t, label), generator.denoiser(x, t.float()), rtol=0, atol=0)
    assert not any(p.requires_grad for p in generator.denoiser.parameters())
    generator.train()
    assert not generator.denoiser.training and generator.adapter.training
    generator(torch.rand(2, 1, *spatial) * 2 - 1, label).backward()
    assert all(p.grad is None for p in generator.denoiser.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.adapter.parameters())


def test_guidance_scale_one_is_the_conditional_output_and_zero_the_unconditional():
    generator, spatial = _generator("2d")
    with torch.no_grad():
        for stage in generator.adapter.stages:
            stage.out.weight.normal_(0, 0.1)
    x, t, label = torch.randn(2, 1, *spatial), torch.tensor([3, 70]), _label(spatial)
    conditional = generator.model_output(x, t, label)
    unconditional = generator.model_output(x, t, torch.zeros_like(label))
    torch.testing.assert_close(generator.guided_output(x, t, label, 1.0), conditional)
    torch.testing.assert_close(generator.guided_output(x, t, label, 0.0), unconditional)
    torch.testing.assert_close(generator.guided_output(x, t, label, 3.0),
                               unconditional + 3.0 * (conditional - unconditional))


def test_condition_dropout_replaces_the_map_by_zeros_in_training_only(monkeypatch):
    generator, spatial = _generator("2d", condition_dropout=0.99)
    seen = []
    original = generator.model_output
    monkeypatch.setattr(generator, "model_output", lambda x, t, c, use_ema=False: seen.append(c) or original(x, t, c))
    label = _label(spatial, batch=4)
    generator.train()
    torch.manual_seed(0)
    generator(torch.zeros(4, 1, *spatial), label)
    generator.eval()
    generator(torch.zeros(4, 1, *spatial), label)
    assert torch.count_nonzero(seen[0]) < label.numel() and torch.equal(seen[1], label)
