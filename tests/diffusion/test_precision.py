"""Mixed precision leaves the diffusion math in float32: schedule values, parameterisation conversions and the
samplers' state stay float32 (float64 stays float64) when the network returns fp16 / bf16 under autocast.

Two kinds of check. With a denoiser whose outputs are exactly representable in half precision (multiples of 1/8),
a float32 run and an autocast run feed the diffusion math the same values, so everything downstream of the network
must agree to float32 round-off (tolerance 1e-6, a few float32 ulps of values of order 1). With a real convolution
the network itself rounds, and the results agree within the error that rounding alone explains (see
``test_sampling_with_a_rounding_network_stays_close``)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from nnugen.config import DiffusionSettings, GenerationSettings, SamplerSettings
from nnugen.diffusion import (
    alphas_cumprod,
    make_betas,
    predict_eps,
    predict_x0,
    schedule_at,
    segmentation_logits,
    segmentation_x0_denoiser,
    training_target,
    x0_denoiser,
)
from nnugen.models.diffusion_segmenter import DiffusionSegmenter
from nnugen.models.image_generator import ImageGenerator

HALF = (torch.bfloat16, torch.float16)
SAMPLERS = (("ddpm", 0.0), ("ddim", 0.5), ("dpm_solver++", 0.0))


class ExactDenoiser(nn.Module):
    """A network whose output under autocast has the autocast dtype (as a real network's has) but values that
    dtype holds exactly: a per-timestep table of multiples of 1/8 times sign(x) plus round(x) / 4 (|x| < 8)."""

    def __init__(self, out_channels: int, timesteps: int = 1000):
        super().__init__()
        self.out_channels = out_channels
        table = torch.randint(-8, 9, (timesteps, out_channels), generator=torch.Generator().manual_seed(0)) / 8
        self.register_buffer("table", table)
        self.auxiliary_levels = ()

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        x = x[:, -self.out_channels:]
        values = self.table[t.long()].view(*t.shape, self.out_channels, *([1] * (x.ndim - 2)))
        out = values * torch.sign(x) + torch.round(x.clamp(-7, 7)) / 4
        return out.to(torch.get_autocast_dtype("cpu")) if torch.is_autocast_enabled("cpu") else out

    def forward_with_auxiliary(self, x: Tensor, t: Tensor) -> tuple[Tensor, list[Tensor]]:
        return self(x, t), []


def _autocast(dtype: torch.dtype | None):
    return torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None)


# --- schedule values and conversions --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", HALF)
def test_schedule_values_are_float32_for_half_tensors(dtype: torch.dtype) -> None:
    abar = alphas_cumprod(make_betas("linear", 1000))
    t = torch.tensor([0, 500, 999])
    values = schedule_at(abar, t, torch.zeros(3, 1, 2, 2, dtype=dtype))
    # half precision would round abar_0 = 0.9999 to 1 (and 1 - abar to 0): the values must be abar in float32
    assert values.dtype == torch.float32
    assert torch.equal(values.flatten(), abar[t].float())
    assert schedule_at(abar, t, torch.zeros(3, 1, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("kind", ("x0", "eps", "v"))
def test_conversions_of_a_half_output_compute_in_float32(dtype: torch.dtype, kind: str) -> None:
    generator = torch.Generator().manual_seed(0)
    output = torch.randn(2, 3, 4, 4, generator=generator).to(dtype)
    x_t = torch.randn(2, 3, 4, 4, generator=generator)
    abar = torch.tensor([0.9999, 0.3], dtype=torch.float64)
    for convert in (predict_x0, predict_eps):
        result = convert(output, x_t, abar, kind)
        assert result.dtype == torch.float32
        assert torch.equal(result, convert(output.float(), x_t, abar, kind))
    target = training_target(kind, x_t.to(dtype), output, abar)
    assert target.dtype == torch.float32
    assert torch.equal(target, training_target(kind, x_t.to(dtype).float(), output.float(), abar))
    logits = segmentation_logits(output, x_t, abar, kind)
    assert logits.dtype == torch.float32
    assert torch.equal(logits, segmentation_logits(output.float(), x_t, abar, kind))


def test_float64_stays_float64() -> None:
    output, x_t = torch.randn(2, 1, 3, dtype=torch.float64), torch.randn(2, 1, 3, dtype=torch.float64)
    abar = torch.tensor([0.5, 0.25], dtype=torch.float64)
    assert predict_x0(output, x_t, abar, "eps").dtype == torch.float64
    assert predict_eps(output, x_t, abar, "x0").dtype == torch.float64
    assert training_target("v", x_t, output, abar).dtype == torch.float64


@pytest.mark.parametrize("dtype", HALF)
def test_x0_denoisers_return_float32_for_a_half_network(dtype: torch.dtype) -> None:
    abar = alphas_cumprod(make_betas("linear", 1000))
    x_t, t = torch.randn(2, 2, 4, 4), torch.tensor([3, 700])

    def half_network(x: Tensor, s: Tensor) -> Tensor:
        return x.to(dtype)

    for kind in ("x0", "eps", "v"):
        assert x0_denoiser(half_network, abar, kind, clip=(-1.0, 1.0))(x_t, t).dtype == torch.float32
        assert segmentation_x0_denoiser(half_network, abar, kind)(x_t, t).dtype == torch.float32


# --- models: sampling and training under autocast -------------------------------------------------------------------


def _image_generator(kind: str, name: str, eta: float, denoiser: nn.Module) -> ImageGenerator:
    return ImageGenerator(denoiser, 1, 2, (8, 8), DiffusionSettings(model_output=kind),
                          SamplerSettings(name=name, steps=12, eta=eta), GenerationSettings(mode="image"))


def _sample(model: ImageGenerator, dtype: torch.dtype | None) -> tuple[Tensor, set[tuple[torch.dtype, ...]]]:
    seen: set[tuple[torch.dtype, ...]] = set()
    with _autocast(dtype):
        x = model.sample(2, generator=torch.Generator().manual_seed(1),
                         callback=lambda i, x, x0_hat: seen.add((x.dtype, x0_hat.dtype)))
    return x, seen


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize(("name", "eta"), SAMPLERS)
@pytest.mark.parametrize("kind", ("x0", "eps", "v"))
def test_image_sampling_under_autocast_equals_float32(dtype: torch.dtype, name: str, eta: float, kind: str) -> None:
    model = _image_generator(kind, name, eta, ExactDenoiser(1))
    reference, _ = _sample(model, None)
    result, seen = _sample(model, dtype)
    # the state x and every x0 estimate stay float32 at every step
    assert seen == {(torch.float32, torch.float32)}
    torch.testing.assert_close(result, reference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize(("name", "eta"), SAMPLERS)
@pytest.mark.parametrize("kind", ("x0", "eps", "v"))
def test_segmentation_sampling_under_autocast_equals_float32(dtype: torch.dtype, name: str, eta: float,
                                                             kind: str) -> None:
    model = DiffusionSegmenter(ExactDenoiser(3), 3, DiffusionSettings(model_output=kind),
                               SamplerSettings(name=name, steps=12, eta=eta, seeds=2)).eval()
    image = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    reference = model.sample_probabilities(image)
    with _autocast(dtype):
        result = model.sample_probabilities(image)
    assert result.dtype == torch.float32
    torch.testing.assert_close(result, reference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("kind", ("x0", "eps", "v"))
def test_training_losses_under_autocast_equal_float32(dtype: torch.dtype, kind: str) -> None:
    """The schedule value of the training loss is float32, not the network output's half dtype."""
    segmenter = DiffusionSegmenter(ExactDenoiser(2), 2, DiffusionSettings(model_output=kind), SamplerSettings())
    generator = _image_generator(kind, "ddim", 0.0, ExactDenoiser(1))
    image = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    target = torch.nn.functional.one_hot((image > 0).long()[:, 0], 2).movedim(-1, 1).float()
    losses = []
    for autocast_dtype in (None, dtype):
        torch.manual_seed(4)  # the same timesteps and noise in both runs
        with _autocast(autocast_dtype):
            losses.append((segmenter.training_loss(image, target), generator(image.clamp(-1, 1))))
    for reference, result in zip(*losses):
        assert result.dtype == torch.float32
        torch.testing.assert_close(result, reference, rtol=1e-5, atol=1e-6)


class RoundingDenoiser(nn.Module):
    """A small convolution: under autocast it computes in fp16 / bf16, as a real denoiser does."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        self.time = nn.Linear(1, 1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.conv(x) + self.time(t[:, None] / 1000).view(-1, 1, 1, 1)


@pytest.mark.parametrize(("dtype", "unit_roundoff"), ((torch.bfloat16, 2.0**-9), (torch.float16, 2.0**-12)))
@pytest.mark.parametrize(("name", "eta"), SAMPLERS)
@pytest.mark.parametrize("kind", ("x0", "eps"))
def test_sampling_with_a_rounding_network_stays_close(dtype: torch.dtype, unit_roundoff: float, name: str,
                                                      eta: float, kind: str) -> None:
    """With the network itself in half precision the sample moves by the network's rounding only. Each of the 12
    steps feeds the state one output of order 1 rounded to relative u = ``unit_roundoff`` (the convolution rounds
    its inputs and weights too, a few u), and an eps output is divided by sqrt(abar) on its way to x0, so the error
    grows over the steps to tens of u: measured at most ~41 u for both dtypes (samples in [-1, 1]); 100 u bounds it
    with margin, while keeping each step's state and x0 estimate float32 is asserted exactly."""
    torch.manual_seed(0)
    model = _image_generator(kind, name, eta, RoundingDenoiser())
    reference, _ = _sample(model, None)
    result, seen = _sample(model, dtype)
    assert seen == {(torch.float32, torch.float32)}
    assert float((result - reference).abs().max()) < 100 * unit_roundoff
