"""Simplex-like noise (AnoDDPM): zero mean, unit variance, spatially smooth, deterministic for a generator."""

import pytest
import torch

from nnugen.anomaly import simplex_noise, simplex_noise_like

SHAPES = {"2d": (4, 2, 64, 64), "3d": (2, 2, 24, 24, 24)}


def _lag1_correlation(x: torch.Tensor, axis: int) -> float:
    a = x.narrow(axis, 0, x.shape[axis] - 1).flatten()
    b = x.narrow(axis, 1, x.shape[axis] - 1).flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_zero_mean_unit_variance_and_smoother_than_white_noise(shape):
    noise = simplex_noise(shape, torch.Generator().manual_seed(0))
    assert noise.shape == shape and noise.dtype == torch.float32 and torch.isfinite(noise).all()
    spatial = tuple(range(2, len(shape)))
    torch.testing.assert_close(noise.mean(dim=spatial), torch.zeros(shape[:2]), atol=1e-5, rtol=0)
    torch.testing.assert_close(noise.std(dim=spatial, unbiased=False), torch.ones(shape[:2]), atol=1e-4, rtol=0)
    white = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    for axis in spatial:
        assert abs(_lag1_correlation(white, axis)) < 0.05
        assert _lag1_correlation(noise, axis) > 0.5


def test_deterministic_for_a_generator_and_different_across_seeds():
    first = simplex_noise((2, 1, 32, 32), torch.Generator().manual_seed(3))
    again = simplex_noise((2, 1, 32, 32), torch.Generator().manual_seed(3))
    other = simplex_noise((2, 1, 32, 32), torch.Generator().manual_seed(4))
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other)
    assert not torch.allclose(first[0], first[1])  # samples of one batch differ


def test_more_octaves_and_persistence_add_fine_detail():
    g = torch.Generator
    coarse = simplex_noise((2, 1, 64, 64), g().manual_seed(0), octaves=1)
    fine = simplex_noise((2, 1, 64, 64), g().manual_seed(0), octaves=6, persistence=1.0)
    assert _lag1_correlation(coarse, 2) > _lag1_correlation(fine, 2)


def test_like_keeps_dtype_and_shape():
    like = torch.zeros(1, 3, 16, 20, dtype=torch.float64)
    noise = simplex_noise_like(like, torch.Generator().manual_seed(0), feature_size=3.0)
    assert noise.shape == like.shape and noise.dtype == torch.float64


@pytest.mark.parametrize("kwargs", [dict(shape=(16, 16)), dict(shape=(1, 1, 4, 4, 4, 4)), dict(octaves=0),
                                    dict(persistence=0.0), dict(persistence=1.5), dict(feature_size=-1.0)])
def test_bad_arguments_raise(kwargs):
    arguments = {"shape": (1, 1, 16, 16), **kwargs}
    with pytest.raises(ValueError):
        simplex_noise(arguments.pop("shape"), torch.Generator(), **arguments)
