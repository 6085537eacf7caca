"""Multi-octave simplex noise for partial noising (AnoDDPM, Wyatt et al. 2022, "AnoDDPM: Anomaly Detection with
Denoising Diffusion Probabilistic Models using Simplex Noise", CVPR workshops), from the ``opensimplex`` package
(Kurt Spencer's OpenSimplex gradient noise, a patent-free simplex noise; Perlin 2002 for the octave sum).

AnoDDPM replaces the white Gaussian noise of the forward process by fractal simplex noise, so that the corrupted image
loses low-frequency structure too and large anomalies get "repainted" instead of merely denoised. As in AnoDDPM's code
(``rand_2d_octaves`` / ``rand_3d_octaves``), octave k samples the noise at the voxel indices divided by
``frequency / 2**k`` (so ``frequency`` is the wavelength of the coarsest octave in voxels, halved at every octave) with
amplitude ``persistence**k``; AnoDDPM's defaults are ``octaves=6``, ``persistence=0.8``, ``frequency=64`` (on
256 x 256 slices: about four coarse features across a slice; on a 64-voxel patch, about one). Two departures, both for
reproducibility and independence: every (sample, channel) gets its own OpenSimplex instance, seeded by a draw from the
torch generator, and a random shift of its grid (AnoDDPM draws a random third coordinate T for its 2D slices; an
unshifted grid would put a lattice vertex, where gradient noise is always 0, on voxel 0). The sum is standardised per
(sample, channel) to zero mean and unit variance (``octave_noise.standardise``), as ``q_sample`` expects. 1D fields
are one row of 2D noise, 2D fields ``noise2array``, 3D fields ``noise3array``.

Cost: opensimplex evaluates its numpy array functions voxel by voxel in Python unless ``numba`` is installed, so each
field costs ``octaves`` passes over the grid (see docs/benchmarks.md for the measured time per 64 x 64 and 32^3
field); ``filtered_noise.py`` is the fast smooth alternative. No OpenSimplex instance is cached: each field's
permutation table is rebuilt from its seed.

A denoiser used with ``noise="simplex"`` must be trained with this noise too (AnoDDPM trains with simplex noise);
a denoiser trained on white Gaussian noise sees out-of-distribution inputs otherwise.

Example::

    >>> g = torch.Generator().manual_seed(0)
    >>> n = simplex_noise((2, 1, 32, 32), g)
    >>> n.shape, round(float(n[0].mean()), 6), round(float(n[0].std(unbiased=False)), 4)
    (torch.Size([2, 1, 32, 32]), 0.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from opensimplex import OpenSimplex
from torch import Tensor

from nnugen.anomaly.octave_noise import DEFAULT_OCTAVES, DEFAULT_PERSISTENCE, check_octave_arguments, standardise

DEFAULT_FREQUENCY = 64.0  # AnoDDPM's default: wavelength of the coarsest octave in voxels
_MAX_SHIFT = 1024.0  # voxels: each field's grid starts at a uniform random point of [0, 1024) per axis


def _field(spatial: Sequence[int], seed: int, shift: np.ndarray, octaves: int, persistence: float,
           frequency: float) -> np.ndarray:
    """One fractal simplex field of ``spatial`` (1 to 3 axes), float64, before standardisation."""
    noise = OpenSimplex(seed)
    grid = list(spatial) if len(spatial) > 1 else [1, *spatial]  # 1D: one row of 2D noise
    field = np.zeros(grid)
    wavelength, amplitude = frequency, 1.0
    for _ in range(octaves):
        # index / wavelength per axis; opensimplex takes the last axis first and returns (.., y, x)
        coordinates = [(np.arange(n) + shift[axis]) / wavelength for axis, n in enumerate(grid)]
        array = noise.noise2array if len(grid) == 2 else noise.noise3array
        field += amplitude * array(*reversed(coordinates))
        wavelength, amplitude = wavelength / 2, amplitude * persistence
    return field.reshape(spatial)


def simplex_noise(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    *,
    octaves: int = DEFAULT_OCTAVES,
    persistence: float = DEFAULT_PERSISTENCE,
    frequency: float = DEFAULT_FREQUENCY,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Fractal simplex noise (B, C, *spatial), zero mean and unit variance per (sample, channel).

    Args:
        shape: (B, C, *spatial) with 1 to 3 spatial axes.
        generator: the only source of randomness: one OpenSimplex seed and one grid shift per (sample, channel) are
            drawn from it (on its device); None uses the global RNG. The same generator state gives the same field.
        octaves: number of octaves summed (AnoDDPM: 6).
        persistence: amplitude factor from one octave to the next (AnoDDPM: 0.8).
        frequency: wavelength of the coarsest octave in voxels, halved at each octave (AnoDDPM: 64).
        device, dtype: of the result (default: the generator's device, float32).
    """
    check_octave_arguments(shape, octaves, persistence)
    if not frequency > 0:
        raise ValueError(f"frequency must be > 0 voxels (the coarsest octave's wavelength; AnoDDPM 64), got "
                         f"{frequency}")
    batch, channels, *spatial = (int(s) for s in shape)
    draw_device = generator.device if generator is not None else torch.device(device or "cpu")
    fields = batch * channels
    seeds = torch.randint(0, 2**63 - 1, (fields,), generator=generator, device=draw_device).tolist()
    shifts = (torch.rand((fields, max(len(spatial), 2)), generator=generator, device=draw_device,
                         dtype=torch.float64) * _MAX_SHIFT).cpu().numpy()
    field = np.stack([_field(spatial, seed, shift, octaves, persistence, float(frequency))
                      for seed, shift in zip(seeds, shifts)]).reshape(batch, channels, *spatial)
    target = device if device is not None else draw_device
    return standardise(torch.from_numpy(field)).to(device=target, dtype=dtype)


def simplex_noise_like(like: Tensor, generator: torch.Generator | None = None, **kwargs: object) -> Tensor:
    """``simplex_noise`` with ``like``'s shape, dtype and device; keyword arguments as for ``simplex_noise``."""
    return simplex_noise(like.shape, generator, device=like.device, dtype=like.dtype, **kwargs)  # type: ignore[arg-type]
