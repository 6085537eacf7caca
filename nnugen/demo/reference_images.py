"""Reference sets the demo's samples are scored against, each made from the real training images, with their
geometry, as ``PREFIX_KKKK_0000<ending>`` files an nnU-Net raw folder of images can hold:

- noise: Gaussian noise with each real image's mean and standard deviation, what a generator that learnt nothing
  but the intensities gives; far from real in any feature space, so it shows that the features see something;
- scrambled real images: each real image's Fourier magnitudes with random phases, then given the image's exact
  histogram (the iterated amplitude-adjusted surrogates of nonlinear time-series testing, IAAFT). They keep the
  image's intensities, its dark background's share and its power spectrum (the scale of its blobs and edges) and
  lose where things are: no outline, no organ, no folds. A generator that learnt the intensities and the texture of
  the data but not its anatomy makes images like these; being nearer real cases than these is the stronger check.
  On the MNI152 demo the 3D generator's blob-like samples scored 0.067 against the training cases where unseen real
  cases scored 0.020, these surrogates 0.038 and Gaussian noise 0.202 (2026-12-05): nearer real than noise, farther
  than the surrogates.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np


def gaussian_like(array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with ``array``'s mean and standard deviation."""
    return rng.normal(array.mean(), array.std(), array.shape)


def phase_scrambled(array: np.ndarray, rng: np.random.Generator, iterations: int = 0) -> np.ndarray:
    """``array`` with its Fourier phases replaced by those of white noise: the same power spectrum (so the same mean
    and, to round-off, the same spread) and a real result, since the noise's phases are Hermitian-symmetric.

    With ``iterations`` > 0, the iterated amplitude-adjusted surrogate (IAAFT, Schreiber & Schmitz 1996): alternately
    give the result ``array``'s exact histogram (rank order) and its power spectrum, ending on the histogram, so the
    background stays as dark and as large as the real one and the spectrum is kept to a good approximation."""
    spectrum = np.fft.fftn(array)
    magnitude = np.abs(spectrum)
    phases = np.angle(np.fft.fftn(rng.standard_normal(array.shape)))
    phases.flat[0] = np.angle(spectrum.flat[0])  # the mean keeps its sign
    result = np.fft.ifftn(magnitude * np.exp(1j * phases)).real
    if iterations:
        values = np.sort(array, axis=None)
        for step in range(iterations):
            ranked = np.empty(array.size)
            ranked[np.argsort(result, axis=None)] = values
            result = ranked.reshape(array.shape)
            if step < iterations - 1:
                result = np.fft.ifftn(magnitude * np.exp(1j * np.angle(np.fft.fftn(result)))).real
    return result


SCRAMBLING_ITERATIONS = 20
"""IAAFT rounds of the "scrambled" reference (the spectrum's correlation with the real one is above 0.99 by then)."""

REFERENCES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "noise": gaussian_like,
    "scrambled": partial(phase_scrambled, iterations=SCRAMBLING_ITERATIONS),
}


def write_reference_set(kind: str, images: list[Path], folder: Path, seed: int = 0) -> None:
    """For each real image, its ``kind`` reference (REFERENCES) as ``KIND_KKKK_0000<ending>`` in ``folder``
    (emptied first)."""
    import SimpleITK as sitk

    from nnugen.atomic_files import atomic_write_with

    make = REFERENCES[kind]
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for k, path in enumerate(images):
        real = sitk.ReadImage(str(path))
        array = sitk.GetArrayFromImage(real).astype(np.float64)
        image = sitk.GetImageFromArray(make(array, rng).astype(np.float32))
        image.CopyInformation(real)
        atomic_write_with(folder / f"{kind}_{k:04d}_0000.nii.gz",
                          lambda tmp, image=image: sitk.WriteImage(image, str(tmp), useCompression=True),
                          suffix=".nii.gz")
