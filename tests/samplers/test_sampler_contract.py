"""One contract test run against every sampler in SAMPLERS (the diffusers pattern), 2D and 3D."""

from collections.abc import Callable
from functools import partial

import pytest
import torch

from nnugen.diffusion import alphas_cumprod, make_betas, partial_start, sampling_timesteps
from nnugen.samplers import SAMPLERS, get_sampler

T = 1000
ABAR = alphas_cumprod(make_betas("linear", T))
SHAPES = [(2, 3, 6, 5), (2, 2, 4, 3, 5)]
# Stochastic configurations: every registered sampler plus DDIM with eta > 0.
ALL = {**SAMPLERS, "ddim_eta1": partial(SAMPLERS["ddim"], eta=1.0)}
STOCHASTIC = ["ddpm", "ddim_eta1"]


def toy_denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A smooth, timestep-dependent x0 estimate, so every step matters."""
    scale = 1 - t.to(x.dtype).view(-1, *([1] * (x.ndim - 1))) / T
    return torch.tanh(x) * scale


def _noise(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=dtype)


def _run(sampler: Callable, x: torch.Tensor, steps: int, seed: int = 0, **kwargs) -> torch.Tensor:
    return sampler(
        toy_denoise, x, ABAR, sampling_timesteps(T, steps), generator=torch.Generator().manual_seed(seed), **kwargs
    )


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("steps", [1, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_determinism(name: str, shape: tuple[int, ...], steps: int, dtype: torch.dtype) -> None:
    x = _noise(shape, dtype)
    before = x.clone()
    out = _run(ALL[name], x, steps)
    assert out.shape == shape and out.dtype == dtype
    assert bool(torch.isfinite(out).all())
    assert torch.equal(x, before), "samplers must not modify their input"
    torch.testing.assert_close(out, _run(ALL[name], x, steps), rtol=0, atol=0)


@pytest.mark.parametrize("name", STOCHASTIC)
@pytest.mark.parametrize("shape", SHAPES)
def test_different_seeds_differ(name: str, shape: tuple[int, ...]) -> None:
    x = _noise(shape)
    assert not torch.allclose(_run(ALL[name], x, 5, seed=1), _run(ALL[name], x, 5, seed=2))


@pytest.mark.parametrize("name", ["ddim", "dpm_solver++"])
def test_deterministic_samplers_ignore_the_seed(name: str) -> None:
    x = _noise(SHAPES[0])
    torch.testing.assert_close(_run(ALL[name], x, 5, seed=1), _run(ALL[name], x, 5, seed=2), rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", SHAPES)
def test_partial_start_and_callback(name: str, shape: tuple[int, ...]) -> None:
    timesteps = sampling_timesteps(T, 4, start=partial_start(0.3, T))
    calls: list[tuple[int, torch.Size, torch.Size]] = []
    out = ALL[name](
        toy_denoise,
        _noise(shape),
        ABAR,
        timesteps,
        generator=torch.Generator().manual_seed(0),
        callback=lambda i, x, x0_hat: calls.append((i, x.shape, x0_hat.shape)),
    )
    assert [c[0] for c in calls] == list(range(len(timesteps)))
    assert all(c[1] == shape and c[2] == shape for c in calls)
    assert out.shape == shape


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("steps", [1, 5, 50])
def test_perfect_denoiser_returns_its_x0(name: str, shape: tuple[int, ...], steps: int) -> None:
    x0 = torch.rand(shape, generator=torch.Generator().manual_seed(4)) * 2 - 1
    out = ALL[name](
        lambda x, t: x0, _noise(shape), ABAR, sampling_timesteps(T, steps), generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_bad_timesteps_raise(name: str) -> None:
    x = _noise(SHAPES[0])
    for bad in (torch.tensor([0, 5]), torch.tensor([T, 0]), torch.tensor([5, 5]), torch.tensor([], dtype=torch.long)):
        with pytest.raises(ValueError):
            ALL[name](toy_denoise, x, ABAR, bad)


def test_registry() -> None:
    assert set(SAMPLERS) == {"ddpm", "ddim", "dpm_solver++"}
    assert get_sampler("ddim") is SAMPLERS["ddim"]
    with pytest.raises(ValueError, match="dpm_solver"):
        get_sampler("euler")


def test_ddim_rejects_bad_eta() -> None:
    with pytest.raises(ValueError):
        _run(SAMPLERS["ddim"], _noise(SHAPES[0]), 5, eta=1.5)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("shape", SHAPES)
def test_one_generator_per_batch_chunk_equals_separate_runs(name: str, shape: tuple[int, ...]) -> None:
    # ensemble members as one batch: chunk j's noise comes from generator j, so each chunk is its own run
    x = torch.cat([_noise(shape), _noise(shape) + 1])
    timesteps = sampling_timesteps(T, 5)
    together = ALL[name](toy_denoise, x, ABAR, timesteps,
                         generator=[torch.Generator().manual_seed(3), torch.Generator().manual_seed(4)])
    alone = [ALL[name](toy_denoise, chunk, ABAR, timesteps, generator=torch.Generator().manual_seed(seed))
             for chunk, seed in zip(x.split(shape[0]), (3, 4))]
    torch.testing.assert_close(together, torch.cat(alone), rtol=0, atol=0)
