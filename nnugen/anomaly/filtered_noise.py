"""Multi-octave Gaussian-filtered white noise: a fast, smooth stand-in for simplex noise, under its own name.

Each octave is white Gaussian noise low-pass filtered by a Gaussian kernel in the Fourier domain (periodic borders),
octave k with a kernel width ``feature_size / 2**k`` voxels and an amplitude ``persistence**k`` (AnoDDPM's octave
recipe, Wyatt et al. 2022: frequency doubling, amplitude times persistence). Each octave is scaled to unit variance by
its exact transfer-function energy, the octaves are summed, and the sum is standardised per (sample, channel)
(``octave_noise.standardise``). The result is smooth, with a Gaussian marginal and the multi-scale character of fractal
noise; it is **not** simplex noise (``simplex_noise.py`` is: its marginal is not Gaussian and its spectrum has the
simplex kernel's shape). One code path serves 1D, 2D and 3D; it costs a few FFTs, far less than ``simplex_noise``.

Example::

    >>> g = torch.Generator().manual_seed(0)
    >>> n = filtered_noise((2, 1, 32, 32), g)
    >>> n.shape, round(float(n[0].mean()), 6), round(float(n[0].std(unbiased=False)), 4)
    (torch.Size([2, 1, 32, 32]), 0.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from nnugen.anomaly.octave_noise import DEFAULT_OCTAVES, DEFAULT_PERSISTENCE, check_octave_arguments, standardise

_MIN_SIGMA = 0.5  # voxels: narrower kernels are indistinguishable from white noise on the grid


def _gaussian_transfer(spatial: Sequence[int], sigma: float, device: torch.device) -> Tensor:
    """Fourier transform of a unit-sum Gaussian of ``sigma`` voxels, laid out for ``torch.fft.rfftn`` of ``spatial``."""
    transfer = torch.ones((), dtype=torch.float64, device=device)
    for axis, n in enumerate(spatial):
        last = axis == len(spatial) - 1
        freqs = torch.fft.rfftfreq(n, device=device) if last else torch.fft.fftfreq(n, device=device)
        view = [1] * len(spatial)
        view[axis] = freqs.numel()
        transfer = transfer * torch.exp(-2 * (math.pi * sigma * freqs.double()) ** 2).reshape(view)
    return transfer


def _octave_std(spatial: Sequence[int], transfer: Tensor) -> float:
    """Exact standard deviation of unit white noise filtered by ``transfer`` (Parseval over the full spectrum)."""
    weights = torch.full(transfer.shape, 2.0, dtype=torch.float64, device=transfer.device)
    weights[..., 0] = 1.0  # rfft's half spectrum: the zero and (even n) Nyquist columns have no mirror twin
    if spatial[-1] % 2 == 0:
        weights[..., -1] = 1.0
    energy = float((weights * transfer**2).sum()) / math.prod(spatial)
    return math.sqrt(energy)


def filtered_noise(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    *,
    octaves: int = DEFAULT_OCTAVES,
    persistence: float = DEFAULT_PERSISTENCE,
    feature_size: float | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Smooth multi-octave filtered noise (B, C, *spatial), zero mean and unit variance per (sample, channel).

    Args:
        shape: (B, C, *spatial) with 1 to 3 spatial axes.
        generator: the only source of randomness (drawn on its device, then moved); None uses the global RNG.
        octaves: number of octaves; octave k is smoothed with ``feature_size / 2**k`` voxels (at least 0.5).
        persistence: amplitude factor from one octave to the next (Wyatt et al. 2022 use 0.8).
        feature_size: Gaussian width of the coarsest octave in voxels; None = a quarter of the smallest spatial axis.
        device, dtype: of the result (default: the generator's device, float32).
    """
    check_octave_arguments(shape, octaves, persistence)
    if feature_size is not None and not feature_size > 0:
        raise ValueError(f"feature_size must be > 0 voxels, or None for a quarter of the smallest axis; got "
                         f"{feature_size}")
    batch, channels, *spatial = (int(s) for s in shape)
    draw_device = generator.device if generator is not None else torch.device(device or "cpu")
    coarsest = min(spatial) / 4 if feature_size is None else float(feature_size)
    white = torch.randn((octaves, batch, channels, *spatial), generator=generator, device=draw_device,
                        dtype=torch.float64)
    axes = tuple(range(-len(spatial), 0))
    field = torch.zeros((batch, channels, *spatial), dtype=torch.float64, device=draw_device)
    for k in range(octaves):
        sigma = max(coarsest / 2**k, _MIN_SIGMA)
        transfer = _gaussian_transfer(spatial, sigma, draw_device)
        octave = torch.fft.irfftn(torch.fft.rfftn(white[k], dim=axes) * transfer, s=spatial, dim=axes)
        field += persistence**k * octave / _octave_std(spatial, transfer)
    return standardise(field).to(device=device if device is not None else draw_device, dtype=dtype)


def filtered_noise_like(like: Tensor, generator: torch.Generator | None = None, **kwargs: object) -> Tensor:
    """``filtered_noise`` with ``like``'s shape, dtype and device; keyword arguments as for ``filtered_noise``."""
    return filtered_noise(like.shape, generator, device=like.device, dtype=like.dtype, **kwargs)  # type: ignore[arg-type]
