"""sampling_timesteps, partial_start, check_timesteps, step_alphas."""

import math
from fractions import Fraction

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


# --- spacings against diffusers' schedulers on the same schedule (issue 16) ---------------------------------------


def test_uniform_grid_unchanged() -> None:
    # the grid of every model trained before `spacing` existed, pinned
    assert sampling_timesteps(1000, 7).tolist() == [999, 833, 666, 500, 333, 167, 0]
    assert sampling_timesteps(1000, 7, spacing="uniform").tolist() == [999, 833, 666, 500, 333, 167, 0]
    assert sampling_timesteps(1000, 4, start=499).tolist() == [499, 333, 166, 0]


@pytest.mark.parametrize("train", [1000, 5, 37])
def test_uniform_is_diffusers_linspace_but_for_half_ties(train: int) -> None:
    diffusers = pytest.importorskip("diffusers")
    # n = 1: numpy's linspace(0, T - 1, 1) is [0], a single step from the clean end; ours is [T - 1], from noise
    assert sampling_timesteps(train, 1).tolist() == [train - 1]
    for steps in range(2, train + 1, max(1, train // 97)):
        scheduler = diffusers.DDIMScheduler(num_train_timesteps=train, timestep_spacing="linspace")
        scheduler.set_timesteps(steps)
        ours = sampling_timesteps(train, steps).tolist()
        # diffusers: linspace(0, T - 1, n).round(), half to even; ours rounds half up. The exact point is
        # (T - 1) j / (n - 1); they must agree wherever it is not an exact half, and differ by 1 at most where it is.
        for k, (a, b) in enumerate(zip(ours, scheduler.timesteps.tolist())):
            exact = Fraction((train - 1) * (steps - 1 - k), steps - 1)
            if (2 * exact).denominator == 1 and (2 * exact).numerator % 2 == 1:
                assert a == math.floor(exact + Fraction(1, 2)) and abs(a - b) <= 1
            else:
                assert a == b, (steps, k)


@pytest.mark.parametrize("train", [1000, 999, 37, 5, 1])
def test_trailing_is_diffusers_trailing(train: int) -> None:
    diffusers = pytest.importorskip("diffusers")
    for steps in range(1, train + 1):
        scheduler = diffusers.DDIMScheduler(num_train_timesteps=train, timestep_spacing="trailing")
        scheduler.set_timesteps(steps)
        theirs = scheduler.timesteps.tolist()
        # numpy's arange(T, 0, -T / n) sometimes yields an (n + 1)-th point that rounds to 0, i.e. index -1: an
        # off-by-float artefact of diffusers (156 of the n at T = 1000), dropped; every other index is the same.
        if len(theirs) == steps + 1:
            assert theirs[-1] == -1
            theirs = theirs[:-1]
        assert sampling_timesteps(train, steps, spacing="trailing").tolist() == theirs


def test_trailing_values_and_partial_start() -> None:
    assert sampling_timesteps(1000, 4, spacing="trailing").tolist() == [999, 749, 499, 249]
    # start 499: the trailing grid of a 500-step process
    assert sampling_timesteps(1000, 4, start=499, spacing="trailing").tolist() == [499, 374, 249, 124]
    assert sampling_timesteps(5, 5, spacing="trailing").tolist() == [4, 3, 2, 1, 0]


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("steps", [2, 5, 10, 20, 50, 100])
def test_log_snr_is_diffusers_lu_lambdas(schedule: str, steps: int) -> None:
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=1000, trained_betas=make_betas(schedule, 1000)
                                                      .numpy(), use_lu_lambdas=True)
    scheduler.set_timesteps(steps)
    theirs = scheduler.timesteps.tolist()
    ours = sampling_timesteps(1000, steps, spacing="log-snr", alphas_cumprod=scheduler.alphas_cumprod.double()).tolist()
    # diffusers interpolates t linearly in log sigma = -log-SNR / 2 between neighbours and rounds: the nearest index
    # in log-SNR. It keeps repeated indices (cosine's last beta 0.999 packs the top log-SNR points into 999, 999, ...);
    # ours moves repeats apart by one. So: equal wherever diffusers' grid is strictly decreasing, else equal to
    # diffusers' grid after the same two passes.
    assert ours[0] == 999 and ours[-1] == 0 and all(a > b for a, b in zip(ours, ours[1:]))
    if all(a > b for a, b in zip(theirs, theirs[1:])):
        assert ours == theirs
    else:
        fixed = list(theirs)
        for k in range(steps - 2, -1, -1):
            fixed[k] = max(fixed[k], fixed[k + 1] + 1)
        for k in range(steps):
            fixed[k] = min(fixed[k], 999 if k == 0 else fixed[k - 1] - 1)
        assert ours == fixed


def test_log_snr_values_partial_start_and_checks() -> None:
    abar = alphas_cumprod(make_betas("linear", 1000))
    assert sampling_timesteps(1000, 5, spacing="log-snr", alphas_cumprod=abar).tolist() == [999, 722, 302, 30, 0]
    # every step a spacing of log-SNR from the start's to index 0's, matched to the nearest index
    grid = sampling_timesteps(1000, 4, start=499, spacing="log-snr", alphas_cumprod=abar)
    log_snr = (abar.double().log() - (-abar.double()).log1p())
    targets = torch.linspace(float(log_snr[499]), float(log_snr[0]), 4, dtype=torch.float64)
    assert grid.tolist() == [int((log_snr[:500] - t).abs().argmin()) for t in targets]
    assert sampling_timesteps(5, 5, spacing="log-snr", alphas_cumprod=alphas_cumprod(make_betas("linear", 5))
                              ).tolist() == [4, 3, 2, 1, 0]
    with pytest.raises(ValueError, match="alphas_cumprod"):
        sampling_timesteps(1000, 5, spacing="log-snr")
    with pytest.raises(ValueError, match="alphas_cumprod"):
        sampling_timesteps(10, 5, spacing="log-snr", alphas_cumprod=abar)
    with pytest.raises(ValueError, match="spacing"):
        sampling_timesteps(1000, 5, spacing="karras")
