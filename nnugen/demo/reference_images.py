"""Reference sets the demo's samples are scored against, each made from the real training images, with their
geometry, as ``PREFIX_KKKK_0000<ending>`` files an nnU-Net raw folder of images can hold:

- noise: Gaussian noise with each real image's mean and standard deviation, what a generator that learnt nothing
  but the intensities gives; far from real in any feature space, so it shows that the features see something;
- phase-scrambled real images: each real image's Fourier magnitudes with random phases (the surrogate images of
  vision science and of nonlinear time-series testing). They keep the image's mean, spread and power spectrum (the
  scale of its blobs and edges) and lose where things are: no body outline, no organ. A generator that learnt the
  texture and the blob scale of the data but not its anatomy makes images like these; being nearer real cases than
  these is the stronger check.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np


def gaussian_like(array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with ``array``'s mean and standard deviation."""
    return rng.normal(array.mean(), array.std(), array.shape)


def phase_scrambled(array: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``array`` with its Fourier phases replaced by those of white noise: the same power spectrum (so the same mean
    and, to round-off, the same spread) and a real result, since the noise's phases are Hermitian-symmetric."""
    spectrum = np.fft.fftn(array)
    phases = np.angle(np.fft.fftn(rng.standard_normal(array.shape)))
    phases.flat[0] = np.angle(spectrum.flat[0])  # the mean keeps its sign
    return np.fft.ifftn(np.abs(spectrum) * np.exp(1j * phases)).real


REFERENCES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "noise": gaussian_like,
    "scrambled": phase_scrambled,
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
