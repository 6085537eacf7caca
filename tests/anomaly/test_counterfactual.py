"""Counterfactuals: partial noising + DDIM, DDIM inversion, determinism, validation, multi-strength stacking."""

import math

import pytest
import torch

from nnugen.anomaly import counterfactual, multi_strength_counterfactuals
from nnugen.diffusion import alphas_cumprod, make_betas

ABAR = alphas_cumprod(make_betas("linear", 1000))
MU, S = 0.5, 0.3
SHAPES = {"2d": (2, 2, 16, 16), "3d": (1, 2, 8, 8, 8)}


def gaussian_oracle(abar: torch.Tensor):
    """The exact MMSE denoiser E[x0 | x_t] of data x0 ~ N(MU, S^2) per voxel (Gaussian posterior)."""

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = float(abar[int(t[0])])
        return MU + S**2 * math.sqrt(a) / (a * S**2 + 1 - a) * (x - math.sqrt(a) * MU)

    return denoise


def _image(shape, seed=1234):  # a seed no counterfactual generator below uses
    return MU + S * torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("noise", ["gaussian", "simplex"])
def test_deterministic_for_a_generator(shape, noise):
    image, denoise = _image(shape), gaussian_oracle(ABAR)

    def run(seed: int) -> torch.Tensor:
        return counterfactual(denoise, image, ABAR, 0.5, 10, noise=noise, generator=torch.Generator().manual_seed(seed))

    first, again, other = run(0), run(0), run(1)
    assert first.shape == image.shape and first.dtype == image.dtype
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)


def test_gaussian_and_simplex_noise_give_different_counterfactuals():
    image, denoise = _image(SHAPES["2d"]), gaussian_oracle(ABAR)
    results = [counterfactual(denoise, image, ABAR, 0.5, 10, noise=n, generator=torch.Generator().manual_seed(0))
               for n in ("gaussian", "simplex")]
    assert not torch.allclose(*results)


@pytest.mark.parametrize("strength", [0.0, -0.25, 1.01, 2, float("nan"), True, "0.5"])
def test_strength_outside_zero_one_raises(strength):
    with pytest.raises(ValueError, match=r"strength must be a number in \(0, 1\]"):
        counterfactual(gaussian_oracle(ABAR), _image(SHAPES["2d"]), ABAR, strength, 10)


@pytest.mark.parametrize("kwargs", [dict(steps=0), dict(steps=2.5), dict(noise="perlin"), dict(image_shape=(4, 4))])
def test_bad_arguments_raise(kwargs):
    image = _image(kwargs.pop("image_shape", SHAPES["2d"]))
    arguments = {"steps": 10, **kwargs}
    with pytest.raises(ValueError):
        counterfactual(gaussian_oracle(ABAR), image, ABAR, 0.5, **arguments)


def test_steps_are_capped_at_one_per_training_step():
    abar = alphas_cumprod(make_betas("linear", 10))
    seen = []

    def denoise(x, t):
        seen.append(int(t[0]))
        return torch.zeros_like(x)

    counterfactual(denoise, _image(SHAPES["2d"]), abar, 0.3, 50, generator=torch.Generator().manual_seed(0))
    assert seen == [2, 1, 0]  # t0 = round(0.3 * 10) - 1


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_inversion_with_a_perfect_denoiser_returns_the_input(shape):
    image = _image(shape)
    out = counterfactual(lambda x, t: image, image, ABAR, 0.5, 10, inversion=True)
    torch.testing.assert_close(out, image, rtol=0, atol=1e-12)
    # The exact Gaussian denoiser follows the probability-flow ODE: encode + decode comes back up to the first-order
    # error of DDIM inversion (it reads the network at t with x_s), which halves when the steps double; partial
    # noising at the same strength lands far away (a new healthy sample).
    errors = [float((counterfactual(gaussian_oracle(ABAR), image, ABAR, 0.5, steps, inversion=True) - image).abs()
                    .mean()) for steps in (50, 100)]
    noised = counterfactual(gaussian_oracle(ABAR), image, ABAR, 0.5, 50, generator=torch.Generator().manual_seed(0))
    assert errors[0] < 0.1 * float((noised - image).abs().mean())
    assert errors[1] == pytest.approx(errors[0] / 2, rel=0.1)


def test_inversion_uses_no_randomness():
    image, denoise = _image(SHAPES["2d"]), gaussian_oracle(ABAR)
    first = counterfactual(denoise, image, ABAR, 0.75, 10, inversion=True, generator=torch.Generator().manual_seed(0))
    other = counterfactual(denoise, image, ABAR, 0.75, 10, inversion=True, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(first, other, rtol=0, atol=0)


def test_full_strength_forgets_the_input():
    image = _image(SHAPES["2d"])
    out = counterfactual(lambda x, t: torch.full_like(x, MU), image, ABAR, 1.0, 5, generator=torch.Generator())
    torch.testing.assert_close(out, torch.full_like(image, MU))


def test_multi_strength_stacks_in_order_and_matches_single_calls():
    image, denoise = _image(SHAPES["3d"]), gaussian_oracle(ABAR)
    strengths = (0.25, 0.5, 0.75)
    generator = torch.Generator().manual_seed(2)
    stacked = multi_strength_counterfactuals(denoise, image, ABAR, strengths, 8, generator=generator)
    assert stacked.shape == (3, *image.shape)
    generator = torch.Generator().manual_seed(2)
    for i, strength in enumerate(strengths):
        torch.testing.assert_close(stacked[i], counterfactual(denoise, image, ABAR, strength, 8, generator=generator))
    with pytest.raises(ValueError, match="non-empty"):
        multi_strength_counterfactuals(denoise, image, ABAR, (), 8)
    with pytest.raises(ValueError, match="strength"):
        multi_strength_counterfactuals(denoise, image, ABAR, (0.5, 1.5), 8)
