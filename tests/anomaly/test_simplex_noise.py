"""Simplex noise (AnoDDPM, from opensimplex): AnoDDPM's octave sum, its energy at low frequencies, and told apart
from white Gaussian noise and from the Gaussian-filtered noise; seeding and standardisation: test_noise_contract.py."""

import numpy as np
import pytest
import torch
from opensimplex import OpenSimplex

from nnugen.anomaly import filtered_noise, simplex_noise, simplex_noise_like
from nnugen.anomaly.simplex_noise import DEFAULT_FREQUENCY, _field


def _low_frequency_energy(x: torch.Tensor, cutoff: float = 1 / 8) -> float:
    """Fraction of the 2D power spectrum (all samples) at radial frequency < cutoff cycles per voxel."""
    power = torch.fft.fftn(x.double(), dim=(-2, -1)).abs() ** 2
    fy, fx = torch.fft.fftfreq(x.shape[-2]), torch.fft.fftfreq(x.shape[-1])
    radius = (fy[:, None] ** 2 + fx[None, :] ** 2).sqrt()
    return float(power[..., radius < cutoff].sum() / power.sum())


def _wrap_correlation(x: torch.Tensor) -> float:
    """Correlation of the first and the last row: high for noise filtered with periodic borders."""
    first, last = x[..., 0, :].flatten(), x[..., -1, :].flatten()
    return float(torch.corrcoef(torch.stack([first, last]))[0, 1])


def test_is_opensimplex_fractal_noise_with_anoddpm_octaves():
    """One field equals AnoDDPM's octave sum (rand_2d_octaves: x / frequency, frequency halved, amplitude x 0.8)
    written out here on opensimplex directly, at the seed and shift the generator drew."""
    seed, shift = 12345, np.array([3.25, 700.5])
    field = _field((16, 24), seed, shift, 6, 0.8, DEFAULT_FREQUENCY)
    noise, expected, frequency, amplitude = OpenSimplex(seed), np.zeros((16, 24)), 64.0, 1.0
    for _ in range(6):
        expected += amplitude * noise.noise2array((np.arange(24) + shift[1]) / frequency,
                                                  (np.arange(16) + shift[0]) / frequency)
        frequency, amplitude = frequency / 2, amplitude * 0.8
    np.testing.assert_array_equal(field, expected)


def test_global_rng_without_a_generator_follows_torch_manual_seed():
    torch.manual_seed(7)
    first = simplex_noise((1, 1, 16, 16))
    torch.manual_seed(7)
    torch.testing.assert_close(simplex_noise((1, 1, 16, 16)), first, rtol=0, atol=0)


def test_energy_at_low_frequencies_unlike_white_noise():
    shape = (4, 1, 64, 64)
    simplex = simplex_noise(shape, torch.Generator().manual_seed(0))
    white = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    # white noise spreads its energy evenly: the fraction is the disc's share of the frequency plane (about 0.05);
    # simplex noise with a 64-voxel coarsest wavelength keeps 0.86 of its energy below 1/8 cycle per voxel (seeds 0-2)
    assert _low_frequency_energy(white) < 0.06
    assert _low_frequency_energy(simplex) > 0.75
    assert _low_frequency_energy(simplex) > 12 * _low_frequency_energy(white)


def test_not_periodic_unlike_the_filtered_noise():
    """The filtered noise is filtered with periodic borders, so its first and last rows are neighbours (correlation
    0.89 to 0.93 for seeds 0-2); simplex noise is not periodic (-0.17 to -0.09)."""
    shape = (8, 1, 64, 64)
    assert _wrap_correlation(filtered_noise(shape, torch.Generator().manual_seed(0))) > 0.8
    assert abs(_wrap_correlation(simplex_noise(shape, torch.Generator().manual_seed(0)))) < 0.4


def test_like_keeps_dtype_and_shape():
    like = torch.zeros(1, 3, 16, 20, dtype=torch.float64)
    noise = simplex_noise_like(like, torch.Generator().manual_seed(0), frequency=8.0)
    assert noise.shape == like.shape and noise.dtype == torch.float64


@pytest.mark.parametrize("kwargs", [dict(shape=(16, 16)), dict(shape=(1, 1, 4, 4, 4, 4)), dict(octaves=0),
                                    dict(persistence=0.0), dict(persistence=1.5), dict(frequency=0.0)])
def test_bad_arguments_raise(kwargs):
    arguments = {"shape": (1, 1, 16, 16), **kwargs}
    with pytest.raises(ValueError):
        simplex_noise(arguments.pop("shape"), torch.Generator(), **arguments)
