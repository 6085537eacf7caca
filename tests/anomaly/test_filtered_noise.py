"""Gaussian-filtered multi-octave noise (what nnugen called simplex before issue 17) and the noise choice by name; what
every smooth noise promises is test_noise_contract.py."""

import dataclasses

import pytest
import torch

from nnugen.anomaly import NOISES, filtered_noise, filtered_noise_like, partial_noise_like, simplex_noise
from nnugen.config import AnomalySettings

SHAPES = {"2d": (4, 2, 64, 64), "3d": (2, 2, 24, 24, 24)}


def _lag1_correlation(x: torch.Tensor, axis: int) -> float:
    a = x.narrow(axis, 0, x.shape[axis] - 1).flatten()
    b = x.narrow(axis, 1, x.shape[axis] - 1).flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_smoother_than_white_noise(shape):
    noise = filtered_noise(shape, torch.Generator().manual_seed(0))
    white = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    for axis in range(2, len(shape)):
        assert abs(_lag1_correlation(white, axis)) < 0.05
        assert _lag1_correlation(noise, axis) > 0.5


def test_more_octaves_and_persistence_add_fine_detail():
    coarse = filtered_noise((2, 1, 64, 64), torch.Generator().manual_seed(0), octaves=1)
    fine = filtered_noise((2, 1, 64, 64), torch.Generator().manual_seed(0), octaves=6, persistence=1.0)
    assert _lag1_correlation(coarse, 2) > _lag1_correlation(fine, 2)


def test_like_keeps_dtype_and_shape():
    like = torch.zeros(1, 3, 16, 20, dtype=torch.float64)
    noise = filtered_noise_like(like, torch.Generator().manual_seed(0), feature_size=3.0)
    assert noise.shape == like.shape and noise.dtype == torch.float64


@pytest.mark.parametrize("kwargs", [dict(shape=(16, 16)), dict(octaves=0), dict(persistence=1.5),
                                    dict(feature_size=-1.0)])
def test_bad_arguments_raise(kwargs):
    arguments = {"shape": (1, 1, 16, 16), **kwargs}
    with pytest.raises(ValueError):
        filtered_noise(arguments.pop("shape"), torch.Generator(), **arguments)


def test_noise_by_name_is_each_function_and_the_settings_accept_every_name():
    like = torch.zeros(2, 1, 16, 16)
    expected = {"gaussian": torch.randn(like.shape, generator=torch.Generator().manual_seed(5)),
                "simplex": simplex_noise(like.shape, torch.Generator().manual_seed(5)),
                "filtered": filtered_noise(like.shape, torch.Generator().manual_seed(5))}
    assert set(expected) == set(NOISES)
    for name in NOISES:
        torch.testing.assert_close(partial_noise_like(name, like, torch.Generator().manual_seed(5)), expected[name],
                                   rtol=0, atol=0)
        assert dataclasses.replace(AnomalySettings(), noise=name).noise == name
    with pytest.raises(ValueError, match="noise must be one of"):
        partial_noise_like("perlin", like)
    with pytest.raises(ValueError, match="anomaly.noise"):
        AnomalySettings(noise="perlin")
