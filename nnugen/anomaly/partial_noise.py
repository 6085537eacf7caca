"""The noise eps of partial noising, by name (``anomaly.noise``): x_t0 = sqrt(abar) x_0 + sqrt(1 - abar) eps.

- ``gaussian``: white Gaussian noise (Ho et al. 2020; pDDPM, THOR);
- ``simplex``: fractal simplex noise, 6 octaves, persistence 0.8, coarsest wavelength 64 voxels (AnoDDPM, Wyatt et al.
  2022; ``simplex_noise.py``);
- ``filtered``: multi-octave Gaussian-filtered white noise, smooth with a Gaussian marginal (``filtered_noise.py``;
  what nnugen called "simplex" before issue 17).

All three are zero mean and unit variance per voxel (Gaussian) or per (sample, channel) (the smooth ones).
"""

from __future__ import annotations

import torch
from torch import Tensor

from nnugen.anomaly.filtered_noise import filtered_noise_like
from nnugen.anomaly.simplex_noise import simplex_noise_like
from nnugen.diffusion import randn_like

NOISES = ("gaussian", "simplex", "filtered")


def partial_noise_like(noise: str, like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Noise of kind ``noise`` (one of ``NOISES``) with ``like``'s shape (B, C, *spatial), dtype and device."""
    if noise == "gaussian":
        return randn_like(like, generator)
    if noise == "simplex":
        return simplex_noise_like(like, generator)
    if noise == "filtered":
        return filtered_noise_like(like, generator)
    raise ValueError(f"noise must be one of {NOISES} (simplex: AnoDDPM; filtered: smooth Gaussian), got {noise!r}")
