"""Training inputs: standard noising, ImgX-DiffSeg recycling and self-conditioning."""

import pytest
import torch

from nnugen.diffusion import (
    alphas_cumprod,
    make_betas,
    noisy_training_input,
    q_sample,
    recycled_training_input,
    sample_training_timesteps,
    self_conditioned_denoiser,
    self_conditioning_input,
)

SHAPES = [(4, 2, 6, 6), (4, 2, 3, 4, 5)]
ABAR = alphas_cumprod(make_betas("linear", 20))


def _x0(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("shape", SHAPES)
def test_noisy_training_input(shape: tuple[int, ...]) -> None:
    x0 = _x0(shape)
    first = noisy_training_input(x0, ABAR, torch.Generator().manual_seed(5))
    again = noisy_training_input(x0, ABAR, torch.Generator().manual_seed(5))
    assert first.t.shape == (shape[0],) and first.t.dtype == torch.long
    assert int(first.t.min()) >= 0 and int(first.t.max()) < 20
    torch.testing.assert_close(first.x_t, q_sample(x0, first.t, ABAR, first.noise))
    assert first.noised_x0 is x0
    for a, b in zip(first, again):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("previous", ["max", "next"])
def test_recycling_noises_the_model_estimate(shape: tuple[int, ...], previous: str) -> None:
    x0 = _x0(shape)
    calls: list[tuple[torch.Tensor, bool]] = []

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append((t.clone(), torch.is_grad_enabled()))
        return 0.5 * x_t

    out = recycled_training_input(denoise, x0, ABAR, previous, torch.Generator().manual_seed(3))
    assert len(calls) == 1
    t_later, grad_enabled = calls[0]
    assert not grad_enabled
    assert int(out.t.max()) < 19
    expected_later = torch.full_like(out.t, 19) if previous == "max" else out.t + 1
    assert t_later.tolist() == expected_later.tolist()
    torch.testing.assert_close(out.x_t, q_sample(out.noised_x0, out.t, ABAR, out.noise))
    assert not torch.equal(out.noised_x0, x0)


def test_recycling_errors() -> None:
    with pytest.raises(ValueError):
        recycled_training_input(lambda x, t: x, _x0(SHAPES[0]), ABAR, "min")
    with pytest.raises(ValueError):
        recycled_training_input(lambda x, t: x, _x0(SHAPES[0]), ABAR[:1])


def test_sample_training_timesteps_cover_the_range() -> None:
    t = sample_training_timesteps(4000, 20, torch.Generator().manual_seed(0))
    assert t.unique().tolist() == list(range(20))


@pytest.mark.parametrize("shape", SHAPES)
def test_self_conditioning_input(shape: tuple[int, ...]) -> None:
    x_t, t = _x0(shape), torch.zeros(shape[0], dtype=torch.long)
    grad_flags: list[bool] = []

    def denoise(x: torch.Tensor, t_: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        grad_flags.append(torch.is_grad_enabled())
        assert torch.equal(cond, torch.zeros_like(x))
        return x + 1

    assert torch.equal(self_conditioning_input(denoise, x_t, t, probability=0.0), torch.zeros_like(x_t))
    assert grad_flags == []
    torch.testing.assert_close(self_conditioning_input(denoise, x_t, t, probability=1.0), x_t + 1)
    assert grad_flags == [False]
    draws = [self_conditioning_input(denoise, x_t, t, 0.5, torch.Generator().manual_seed(s)) for s in range(40)]
    used = sum(bool(d.abs().sum() > 0) for d in draws)
    assert 5 < used < 35
    with pytest.raises(ValueError):
        self_conditioning_input(denoise, x_t, t, probability=1.5)


def test_self_conditioned_denoiser_feeds_the_previous_estimate() -> None:
    seen: list[torch.Tensor] = []

    def denoise(x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        seen.append(cond)
        return x * 2

    wrapped = self_conditioned_denoiser(denoise)
    x, t = torch.ones(2, 1, 3, 3), torch.zeros(2, dtype=torch.long)
    first = wrapped(x, t)
    wrapped(x * 3, t)
    assert torch.equal(seen[0], torch.zeros_like(x))
    assert torch.equal(seen[1], first)
