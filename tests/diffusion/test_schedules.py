"""Noise schedules: shape, monotonicity, reaching noise at any T, and errors."""

import pytest
import torch

from nnugen.diffusion import SCHEDULES, alphas_cumprod, make_betas


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("timesteps", [1, 5, 1000])
def test_betas_monotone_and_alpha_bar_in_unit_interval(kind: str, timesteps: int) -> None:
    betas = make_betas(kind, timesteps)
    abar = alphas_cumprod(betas)
    assert betas.shape == abar.shape == (timesteps,)
    assert betas.dtype == abar.dtype == torch.float64
    assert bool((betas > 0).all()) and bool((betas < 1).all())
    assert bool((betas.diff() >= 0).all())
    assert bool((abar > 0).all()) and bool((abar <= 1).all())
    assert bool((abar.diff() < 0).all())


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("timesteps", [1, 5, 1000])
def test_last_step_is_almost_pure_noise(kind: str, timesteps: int) -> None:
    assert float(alphas_cumprod(make_betas(kind, timesteps))[-1]) < 0.05


def test_linear_at_1000_is_the_reference_schedule() -> None:
    betas = make_betas("linear", 1000)
    assert float(betas[0]) == pytest.approx(1e-4)
    assert float(betas[-1]) == pytest.approx(0.02)


@pytest.mark.parametrize("kind", ["linear", "scaled_linear"])
def test_fewer_steps_respace_the_1000_step_process(kind: str) -> None:
    # Nichol & Dhariwal 2021 respacing, as ImgX-DiffSeg's 5 timesteps of a 1001-step schedule: alpha-bar of the
    # short schedule equals the reference alpha-bar at evenly spaced steps, so the whole noise range is kept.
    reference = alphas_cumprod(make_betas(kind, 1000))
    short = alphas_cumprod(make_betas(kind, 5))
    torch.testing.assert_close(short, reference[[0, 250, 500, 749, 999]])
    assert 0.3 < float(short[1]) < 0.9, "the second of 5 steps should be half-way noisy, not pure noise"


def test_cosine_follows_the_closed_form_before_clipping() -> None:
    timesteps, s = 1000, 0.008
    abar = alphas_cumprod(make_betas("cosine", timesteps))
    t = torch.arange(1, timesteps + 1, dtype=torch.float64)
    f = torch.cos((t / timesteps + s) / (1 + s) * torch.pi / 2) ** 2
    f0 = torch.cos(torch.tensor(s / (1 + s) * torch.pi / 2, dtype=torch.float64)) ** 2
    torch.testing.assert_close(abar[:900], (f / f0)[:900], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "quadratic", "timesteps": 10},
        {"kind": "linear", "timesteps": 0},
        {"kind": "linear", "timesteps": 2.5},
        {"kind": "linear", "timesteps": 10, "beta_start": 0.0},
        {"kind": "linear", "timesteps": 10, "beta_start": 0.1, "beta_end": 0.01},
    ],
)
def test_bad_arguments_raise(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        make_betas(**kwargs)


def test_alphas_cumprod_rejects_bad_betas() -> None:
    with pytest.raises(ValueError):
        alphas_cumprod(torch.tensor([0.1, 1.0]))
    with pytest.raises(ValueError):
        alphas_cumprod(torch.ones(2, 2) * 0.1)
