"""Random smooth deformations of a label map: new label maps, of the same anatomy, to generate images for (issue 18
part 3, benchmarks/synthetic_augmentation.py). An affine (rotation, isotropic scale, shift about the centre) composed
with a smooth elastic field (white noise smoothed by a Gaussian, as Simard et al. 2003 deform digits), applied by
nearest-neighbour lookup so every output voxel carries a label value of the input: no new labels, no blending.
Math only (numpy, scipy)."""

from __future__ import annotations

import itertools

import numpy as np


def deform_label_map(label: np.ndarray, rng: np.random.Generator, strength: float = 1.0, rotation_deg: float = 6.0,
                     scale: float = 0.06, shift: float = 1.5, displacement: float = 1.5,
                     smoothness: float = 6.0) -> np.ndarray:
    """A deformed copy of the integer ``label`` (any shape; axes of length 1, e.g. the leading 1 of a 2D slice stored
    as 1 x Y x X, are left alone), same shape and dtype, every value one of ``label``'s.

    Args:
        label: integer label map.
        rng: the only source of randomness: the same generator state gives the same map.
        strength: factor on every amplitude below; 0 gives ``label`` back unchanged.
        rotation_deg: largest rotation per plane of the deformed axes, degrees (uniform in +- this).
        scale: largest relative isotropic zoom (uniform in 1 +- this).
        shift: largest shift per axis, voxels (uniform in +- this).
        displacement: standard deviation of the elastic displacement per axis, voxels.
        smoothness: standard deviation of the Gaussian that smooths the elastic field, voxels.
    """
    from scipy import ndimage

    label = np.asarray(label)
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label must be an integer array, got {label.dtype}; cast it (e.g. .astype(np.uint8))")
    if strength < 0 or min(rotation_deg, scale, shift, displacement) < 0 or smoothness <= 0:
        raise ValueError("amplitudes and strength must be >= 0 and smoothness > 0")
    axes = [axis for axis, size in enumerate(label.shape) if size > 1]
    if not axes:
        return label.copy()
    spatial = [label.shape[a] for a in axes]
    centre = (np.asarray(spatial, np.float64) - 1) / 2
    # where each output voxel looks up its label: x_in = A (x_out - c) + c + t + u(x_out)
    rotation = np.eye(len(axes))
    for a, b in itertools.combinations(range(len(axes)), 2):
        angle = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg) * strength)
        turn = np.eye(len(axes))
        turn[[a, a, b, b], [a, b, a, b]] = [np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)]
        rotation = rotation @ turn
    matrix = rotation / (1 + rng.uniform(-scale, scale) * strength)
    offset = rng.uniform(-shift, shift, len(axes)) * strength
    grid = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in spatial], indexing="ij"))
    coordinates = np.einsum("ij,j...->i...", matrix, grid - centre.reshape(-1, *[1] * len(axes)))
    coordinates += (centre + offset).reshape(-1, *[1] * len(axes))
    for axis in range(len(axes)):
        field = ndimage.gaussian_filter(rng.standard_normal(spatial), smoothness, mode="reflect")
        coordinates[axis] += field / max(float(field.std()), 1e-12) * displacement * strength
    squeezed = label.reshape(spatial)
    deformed = ndimage.map_coordinates(squeezed, coordinates, order=0, mode="nearest")
    return deformed.reshape(label.shape).astype(label.dtype, copy=False)


def dice(a: np.ndarray, b: np.ndarray, value: int) -> float:
    """Dice of ``value`` between two label maps (1 when neither has it)."""
    x, y = a == value, b == value
    total = int(x.sum() + y.sum())
    return 1.0 if total == 0 else 2.0 * float((x & y).sum()) / total
