"""Counter-based noise (issue 19): Philox-4x32-10 against Random123's known answers, a region drawn alone equal bit
for bit to the same region of the whole volume, seeds and draws that differ, N(0, 1) moments, and the samplers'
``randn_like`` handing it the draws."""

from __future__ import annotations

import math

import pytest
import torch

from nnugen.diffusion.noise import randn_like
from nnugen.diffusion.positional_noise import PositionalNoise, philox4x32, positional_normal

# Random123 tests/kat_vectors, the three "philox4x32 10" lines: counter (4 words), key (2 words), result (4 words)
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KAT)
def test_philox_matches_random123_known_answers(counter, key, expected):
    words = philox4x32([torch.tensor([c], dtype=torch.int64) for c in counter], key)
    assert [int(w) for w in words] == list(expected)


@pytest.mark.parametrize("volume", [(20, 24), (9, 12, 10)])
def test_a_region_drawn_alone_equals_that_region_of_the_whole_volume(volume):
    whole = positional_normal(5, 3, volume, (0,) * len(volume), volume, channels=2, batch=2)
    origin = tuple(v // 3 for v in volume)
    shape = tuple(v - o - 1 for v, o in zip(volume, origin))
    region = positional_normal(5, 3, volume, origin, shape, channels=2, batch=2)
    cut = whole[(slice(None), slice(None), *(slice(o, o + s) for o, s in zip(origin, shape)))]
    assert torch.equal(region, cut)
    assert torch.equal(positional_normal(5, 3, volume, (0,) * len(volume), volume, channels=2, batch=2), whole)


def test_regions_that_tile_the_volume_give_the_whole_draw_in_float64():
    volume = (16, 12, 10)
    whole = positional_normal(11, 0, volume, (0, 0, 0), volume, dtype=torch.float64)
    pieces = [positional_normal(11, 0, volume, (z, 0, x), (8, 12, 5), dtype=torch.float64)
              for z in (0, 8) for x in (0, 5)]
    tiled = torch.cat([torch.cat(pieces[0:2], -1), torch.cat(pieces[2:4], -1)], -3)
    assert torch.equal(tiled, whole)


def test_seeds_draws_channels_and_batch_members_differ():
    volume = (8, 8, 8)
    base = positional_normal(1, 0, volume, (0, 0, 0), volume, channels=2, batch=2)
    for other in (positional_normal(2, 0, volume, (0, 0, 0), volume, channels=2, batch=2),
                  positional_normal(1, 1, volume, (0, 0, 0), volume, channels=2, batch=2),
                  positional_normal(1 + 2**32, 0, volume, (0, 0, 0), volume, channels=2, batch=2)):
        assert (base != other).float().mean() > 0.99
    assert (base[:, 0] != base[:, 1]).float().mean() > 0.99 and (base[0] != base[1]).float().mean() > 0.99
    # the volume's shape is part of the index: a (8, 8, 8) volume is not a window of a (8, 8, 16) one
    assert not torch.equal(base[0, 0], positional_normal(1, 0, (8, 8, 16), (0, 0, 0), volume)[0, 0])


def test_moments_are_standard_normal():
    z = positional_normal(123, 4, (64, 64, 64), (0, 0, 0), (64, 64, 64), dtype=torch.float64).flatten()
    n = z.numel()
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(((z - z.mean()) ** 3).mean() / z.std() ** 3) < 5 * math.sqrt(6 / n)
    assert abs(((z - z.mean()) ** 4).mean() / z.var() ** 2 - 3) < 5 * math.sqrt(24 / n)
    # tail mass beyond 3 sigma: 0.0027 for N(0, 1)
    assert (z.abs() > 3).double().mean() == pytest.approx(0.0027, rel=0.1)
    neighbours = (z.view(64, 64, 64)[..., 1:] * z.view(64, 64, 64)[..., :-1]).mean()
    assert abs(neighbours) < 5 / math.sqrt(n)


def test_the_samplers_draw_through_randn_like_in_order():
    noise = PositionalNoise(seed=9, volume=(6, 10), origin=(2, 3))
    like = torch.empty(1, 3, 4, 5)
    first, second = randn_like(like, noise), randn_like(like, noise)
    assert noise.draws == 2
    assert torch.equal(first, positional_normal(9, 0, (6, 10), (2, 3), (4, 5), channels=3))
    assert torch.equal(second, positional_normal(9, 1, (6, 10), (2, 3), (4, 5), channels=3))
    assert first.dtype == torch.float32 and randn_like(torch.empty(1, 3, 4, 5, dtype=torch.float64), noise).dtype \
        == torch.float64


def test_a_region_outside_the_volume_is_refused():
    with pytest.raises(ValueError, match="does not lie inside"):
        positional_normal(0, 0, (8, 8), (4, 0), (5, 8))
    with pytest.raises(ValueError, match="axes"):
        positional_normal(0, 0, (8, 8), (0, 0, 0), (8, 8, 8))
