"""One volume sampled by several gloo processes (issue 19): the slab / halo arithmetic, the 1-piece partition equal to
the windowed denoiser bit for bit, 2 processes equal to 1 process to 1e-5 along either axis (2D and 3D, DDPM with
noise at every step, an analytic window-dependent denoiser), and a rank that dies mid-sampling ending its neighbour
with ``RankLost`` within the timeout instead of a hang."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from gloo_ranks import ranks_of

from nnugen.diffusion import alphas_cumprod, make_betas, sampling_timesteps
from nnugen.diffusion.halo_exchange import RankLost, gather_volume
from nnugen.diffusion.noise import randn_like
from nnugen.diffusion.partitioned_denoiser import partitioned_denoiser
from nnugen.diffusion.positional_noise import PositionalNoise
from nnugen.diffusion.volume_partition import Box, partition_volume
from nnugen.diffusion.windowed_denoiser import windowed_denoiser
from nnugen.models.sliding_windows import nnunet_windows
from nnugen.samplers import ddpm

WORLD = 2
SEED = 17
CHANNELS = 2
CASES = {  # name: (volume, patch, grid)
    "2d_axis0": ((28, 36), (8, 12), (2, 1)),
    "2d_axis1": ((28, 36), (8, 12), (1, 2)),
    "3d_axis1": ((12, 20, 16), (6, 8, 8), (1, 2, 1)),
}


def _denoiser(patch: tuple[int, ...]):
    """x0 = tanh(conv(x_t)) + a fixed pattern over the patch: non-linear, and window-dependent through the zero
    padding at the window's border and the pattern, so the windows' average matters."""
    generator = torch.Generator().manual_seed(3)
    kernel = torch.randn(CHANNELS, CHANNELS, *(3,) * len(patch), generator=generator) / 6
    pattern = 0.2 * torch.randn(1, CHANNELS, *patch, generator=generator)
    conv = F.conv2d if len(patch) == 2 else F.conv3d

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.tanh(conv(x_t, kernel, padding=1) * (1 + t.view(-1, *(1,) * (x_t.ndim - 1)) / 10)) + pattern

    return denoise


def _schedule():
    abar = alphas_cumprod(make_betas("linear", 20, 1e-3, 0.2)).double()
    return abar, sampling_timesteps(20, 5, spacing="uniform", alphas_cumprod=abar)


def _one_process(volume, patch) -> torch.Tensor:
    noise = PositionalNoise(SEED, volume)
    x = randn_like(torch.empty(1, CHANNELS, *volume), noise)
    abar, steps = _schedule()
    return ddpm(windowed_denoiser(_denoiser(patch), patch, nnunet_windows), x, abar, steps, generator=noise)


def _partitioned(volume, patch, grid, rank, timeout=timedelta(seconds=60), die_after: int | None = None):
    partition = partition_volume(volume, patch, nnunet_windows(volume, patch)[0], grid)
    me = partition.pieces[rank]
    noise = PositionalNoise(SEED, volume, me.extent.lo)
    x = randn_like(torch.empty(1, CHANNELS, *me.extent.shape), noise)
    abar, steps = _schedule()
    traffic: list[int] = []
    denoise = partitioned_denoiser(_denoiser(patch), partition, rank, nnunet_windows, timeout, traffic)

    def callback(i, *_):
        if die_after is not None and i + 1 == die_after:
            os._exit(9)  # as a kill -9: no goodbye to the process group

    out = ddpm(denoise, x, abar, steps, generator=noise, callback=callback)
    return gather_volume(out, partition, rank, timeout), traffic


def _rank(rank: int) -> dict:
    return {name: _partitioned(*case, rank) for name, case in CASES.items()}


def _dying_worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=5))
    started = time.monotonic()
    try:
        _partitioned(*CASES["2d_axis0"], rank, timedelta(seconds=5), die_after=2 if rank == 1 else None)
    except RankLost as error:
        with open(f"{folder}/lost_{rank}.txt", "w") as file:
            file.write(f"{time.monotonic() - started:.1f} {error}")
        raise


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    return ranks_of(_rank, WORLD, tmp_path_factory, "partitioned")


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_processes_sample_the_volume_of_one(ranks, name):
    volume, patch, _ = CASES[name]
    whole, traffic = ranks[0][name]
    assert ranks[1][name][0] is None
    reference = _one_process(volume, patch)
    torch.testing.assert_close(whole, reference, atol=1e-5, rtol=0)
    assert len(traffic) == 5 and min(traffic) > 0  # an exchange at every step


def test_without_the_exchange_a_slab_would_differ(ranks):
    """The test can tell: rank 0's extent sampled alone, as a volume of its own, is not the whole volume's."""
    volume, patch, grid = CASES["2d_axis0"]
    extent = partition_volume(volume, patch, nnunet_windows(volume, patch)[0], grid).pieces[0].extent
    alone = _one_process(extent.shape, patch)
    assert (alone - ranks[0]["2d_axis0"][0][(..., *extent.within(Box((0, 0), volume)))]).abs().max() > 1e-2


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_piece_is_the_windowed_denoiser_bit_for_bit(name):
    volume, patch, _ = CASES[name]
    whole, traffic = _partitioned(volume, patch, (1,) * len(volume), 0)
    assert torch.equal(whole, _one_process(volume, patch)) and traffic == [0] * 5


def test_owned_boxes_tile_the_volume_and_every_window_has_one_owner():
    volume, patch = (40, 30, 21), (8, 8, 8)
    starts = nnunet_windows(volume, patch)[0]
    partition = partition_volume(volume, patch, starts, (3, 2, 1))
    cover = torch.zeros(volume, dtype=torch.int64)
    for piece in partition.pieces:
        cover[tuple(slice(lo, hi) for lo, hi in zip(piece.owned.lo, piece.owned.hi))] += 1
        for corner in piece.windows:
            assert all(lo <= c and c + p <= hi for c, p, lo, hi in
                       zip(corner, patch, piece.extent.lo, piece.extent.hi))
    assert bool((cover == 1).all())
    windows = [w for piece in partition.pieces for w in piece.windows]
    assert len(windows) == len(set(windows)) == len(starts[0]) * len(starts[1]) * len(starts[2])


@pytest.mark.parametrize(("grid", "message"), [((5, 1), "has only 4 window"), ((1, 1, 1), "one number of pieces"),
                                               ((0, 2), "at least 1 piece")])
def test_a_partition_that_leaves_a_piece_without_a_window_is_refused(grid, message):
    volume, patch = (20, 30), (8, 8)
    with pytest.raises(ValueError, match=message):
        partition_volume(volume, patch, nnunet_windows(volume, patch)[0], grid)


def test_a_rank_killed_mid_sampling_ends_its_neighbour_within_the_timeout(tmp_path):
    started = time.monotonic()
    context = mp.start_processes(_dying_worker, args=(str(tmp_path),), nprocs=WORLD, join=False, start_method="spawn")
    for process in context.processes:
        process.join(timeout=90)
    assert all(p.exitcode is not None for p in context.processes), "a rank still waits after 90 s"
    assert [p.exitcode for p in context.processes] == [1, 9]
    elapsed, message = (tmp_path / "lost_0.txt").read_text().split(" ", 1)
    assert "rank 0 lost its neighbours" in message and float(elapsed) < 60
    assert time.monotonic() - started < 90
