"""sampling_timesteps, partial_start, check_timesteps, step_alphas."""

import pytest
import torch

from nnugen.diffusion import alphas_cumprod, check_timesteps, make_betas, partial_start, sampling_timesteps, step_alphas


@pytest.mark.parametrize(
    ("train", "steps", "start"),
    [(1000, 1, None), (1000, 50, None), (1000, 1000, None), (5, 5, None), (5, 3, None), (1000, 7, 299), (1, 1, None)],
)
def test_lengths_ends_and_strictly_decreasing(train: int, steps: int, start: int | None) -> None:
    ts = sampling_timesteps(train, steps, start)
    assert ts.dtype == torch.long and ts.shape == (steps,)
    assert int(ts[0]) == (train - 1 if start is None else start)
    if steps > 1:
        assert int(ts[-1]) == 0
        assert bool((ts.diff() < 0).all())


def test_all_steps_visit_every_index() -> None:
    assert sampling_timesteps(10, 10).tolist() == list(range(9, -1, -1))


@pytest.mark.parametrize(
    ("train", "steps", "start"), [(0, 1, None), (10, 0, None), (10, 11, None), (10, 5, 3), (10, 2, 10), (10, 2, -1)]
)
def test_bad_values_raise(train: int, steps: int, start: int | None) -> None:
    with pytest.raises(ValueError):
        sampling_timesteps(train, steps, start)


def test_partial_start() -> None:
    assert partial_start(1.0, 1000) == 999
    assert partial_start(0.3, 1000) == 299
    assert partial_start(0.001, 100) == 0
    with pytest.raises(ValueError):
        partial_start(0.0, 1000)
    with pytest.raises(ValueError):
        partial_start(1.5, 1000)


def test_check_timesteps_and_step_alphas() -> None:
    abar = alphas_cumprod(make_betas("linear", 10))
    pairs = step_alphas(abar, torch.tensor([9, 4, 0]))
    assert pairs == [(float(abar[9]), float(abar[4])), (float(abar[4]), float(abar[0])), (float(abar[0]), 1.0)]
    check_timesteps(torch.tensor([0, 3]), 10, increasing=True)
    for bad in (
        torch.tensor([4, 4]),
        torch.tensor([0, 4]),
        torch.tensor([10, 0]),
        torch.tensor([]).long(),
        torch.tensor([3.0, 1.0]),
    ):
        with pytest.raises(ValueError):
            check_timesteps(bad, 10)
