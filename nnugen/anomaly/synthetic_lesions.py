"""The synthetic-lesion protocol: lesions of known shape and contrast inserted into healthy anatomy.

This checks the machinery (counterfactuals, maps, post-processing, threshold selection, metrics, the dataset
plumbing) on data where the answer is known; it says nothing about performance on real pathology, whose shapes,
contrasts and mass effects no procedural family captures. Published numbers (e.g. BraTS) need real data.

Lesion families differ in shape (near-spherical or elongated ellipsoids; irregular blobs, i.e. an ellipsoid whose
border is pushed in and out by thresholded smooth noise), size, number and contrast (hyper- or hypo-intense, relative
to the local tissue intensity, with a smooth edge). The families that choose the threshold (``TUNING_FAMILIES``) are
not the families scored (``TEST_FAMILIES``), so the test score is not tuned on the lesions it measures.

``nnugen.demo.lesion_dataset.write_lesion_dataset`` puts these lesions into phantom cases and writes them as an
nnU-Net raw dataset; this module knows nothing of phantoms or files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

SHAPES = ("ellipsoid", "blob")
_MIN_LESION_VOXELS = 4
_MIN_RADIUS = 1.5  # voxels


@dataclass(frozen=True)
class LesionFamily:
    """How one kind of lesion looks. Sizes are fractions of the smallest image axis (so families scale with the
    image); ``contrast`` is the intensity change relative to the local tissue intensity (> 0 hyper-, < 0
    hypo-intense); ``edge`` the width of the smooth border in voxels; ``roughness`` how far smooth noise pushes a
    blob's border (0 for ellipsoids); ``aspect`` the range of the per-axis factor on the radius."""

    name: str
    shape: str
    radius: tuple[float, float]
    count: tuple[int, int]
    contrast: tuple[float, float]
    aspect: tuple[float, float] = (0.85, 1.15)
    edge: float = 0.75
    roughness: float = 0.0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"LesionFamily.shape must be one of {SHAPES}, got {self.shape!r}")
        if not 0 < self.radius[0] <= self.radius[1] < 0.5:
            raise ValueError(f"radius must be (low, high) fractions with 0 < low <= high < 0.5, got {self.radius}")
        if not 1 <= self.count[0] <= self.count[1]:
            raise ValueError(f"count must be (low, high) integers with 1 <= low <= high, got {self.count}")
        low, high = self.contrast
        if not (0 < low <= high or -1 < low <= high < 0):
            raise ValueError(f"contrast must be (low, high) of one sign, each in (-1, 0) or > 0, got {self.contrast}")
        if not 0 < self.aspect[0] <= self.aspect[1] or self.edge <= 0 or self.roughness < 0:
            raise ValueError("aspect must be positive (low <= high), edge > 0 voxels and roughness >= 0")


LESION_FAMILIES: dict[str, LesionFamily] = {
    family.name: family for family in (
        LesionFamily("hyper_spheres", "ellipsoid", radius=(0.06, 0.1), count=(1, 3), contrast=(0.5, 0.9)),
        LesionFamily("hypo_ellipsoids", "ellipsoid", radius=(0.08, 0.13), count=(1, 2), contrast=(-0.6, -0.4),
                     aspect=(0.55, 1.45)),
        LesionFamily("hyper_blobs", "blob", radius=(0.08, 0.13), count=(1, 2), contrast=(0.4, 0.8), roughness=0.6),
        LesionFamily("hypo_blobs", "blob", radius=(0.07, 0.12), count=(1, 3), contrast=(-0.55, -0.35),
                     roughness=0.6),
    )
}
TUNING_FAMILIES = ("hyper_spheres", "hypo_ellipsoids")
TEST_FAMILIES = ("hyper_blobs", "hypo_blobs")


def _family(family: str | LesionFamily) -> LesionFamily:
    if isinstance(family, LesionFamily):
        return family
    if family not in LESION_FAMILIES:
        raise ValueError(f"unknown lesion family {family!r}; choose one of {sorted(LESION_FAMILIES)}")
    return LESION_FAMILIES[family]


def _rotation(ndim: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation (QR of a Gaussian matrix, signs fixed, determinant +1)."""
    q, r = np.linalg.qr(rng.standard_normal((ndim, ndim)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _lesion_weight(shape: tuple[int, ...], centre: np.ndarray, radius: float, family: LesionFamily,
                   rng: np.random.Generator) -> np.ndarray:
    """Soft membership in [0, 1] of one lesion: above 0.5 exactly on its voxels, falling off over ``family.edge``
    voxels of Euclidean distance outside and reaching 0 beyond three edge widths."""
    grid = np.indices(shape, dtype=np.float64) - centre.reshape(-1, *[1] * len(shape))
    local = np.tensordot(_rotation(len(shape), rng).T, grid, axes=1)
    semi_axes = radius * rng.uniform(*family.aspect, len(shape))
    rho = np.sqrt(np.einsum("i...,i...->...", local, local / (semi_axes**2).reshape(-1, *[1] * len(shape))))
    level = rho - 1
    if family.shape == "blob":
        noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=max(radius / 2, 1.0), mode="wrap")
        level = level + family.roughness * (noise - noise.mean()) / (noise.std() + 1e-12)
    inside = level <= 0
    if not inside.any():
        return np.zeros(shape)
    labels, count = ndimage.label(inside)
    if count > 1:  # one lesion is one connected piece: the one at the centre, else the largest
        at_centre = labels[tuple(np.round(centre).astype(int))]
        inside = labels == (at_centre or np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    # Signed Euclidean distance to the border, +-0.5 on the voxels either side of it, so weight >= 0.5 is `inside`.
    distance = np.where(inside, 0.5 - ndimage.distance_transform_edt(inside),
                        ndimage.distance_transform_edt(~inside) - 0.5)
    weight = 0.5 * (1 - np.tanh(distance / family.edge))
    weight[distance > 3 * family.edge] = 0.0  # keep each lesion local: nothing changes far from it
    return weight


def insert_lesions(image: np.ndarray, body: np.ndarray, rng: np.random.Generator,
                   family: str | LesionFamily) -> tuple[np.ndarray, np.ndarray]:
    """(image with lesions, lesion mask) for ``image`` (C, *spatial) and a ``body`` mask (*spatial).

    Lesion centres lie inside the body, at least a radius from its border where possible. Each lesion changes every
    channel by ``contrast * weight * local tissue intensity`` (one random contrast per channel, the family's sign;
    local intensity = body-normalised Gaussian average); the mask is ``weight >= 0.5`` inside the body. The image
    keeps its dtype; no value is pushed below min(image minimum, 0). Deterministic for ``rng``.
    """
    family = _family(family)
    image = np.asarray(image)
    body = np.asarray(body).astype(bool)
    if image.ndim != body.ndim + 1 or image.shape[1:] != body.shape:
        raise ValueError(f"image must be (C, *spatial) and body (*spatial) of the same grid, got {image.shape} and "
                         f"{body.shape}")
    if body.sum() < _MIN_LESION_VOXELS:
        raise ValueError("the body mask is (nearly) empty; pass body_mask(image[None])[0, 0] or a real mask")
    spatial = body.shape
    values = image.astype(np.float64)
    scale = float(min(spatial))
    smoothing = max(np.mean(family.radius) * scale, 1.0)
    weight_sum = ndimage.gaussian_filter(body.astype(np.float64), smoothing)
    local = np.stack([ndimage.gaussian_filter(channel * body, smoothing) for channel in values])
    local = local / np.maximum(weight_sum, 1e-6)

    depth = ndimage.distance_transform_edt(body)
    delta = np.zeros_like(values)
    mask = np.zeros(spatial, bool)
    for _ in range(int(rng.integers(family.count[0], family.count[1] + 1))):
        for _attempt in range(20):
            radius = max(rng.uniform(*family.radius) * scale, _MIN_RADIUS)
            inside = np.argwhere(depth >= min(radius, depth.max()))
            centre = inside[rng.integers(len(inside))].astype(np.float64)
            weight = _lesion_weight(spatial, centre, radius, family, rng) * body
            lesion = weight >= 0.5
            if lesion.sum() >= _MIN_LESION_VOXELS:
                break
        else:  # no room for this lesion (a tiny body): leave it out rather than insert an unlabelled change
            continue
        contrast = rng.uniform(*family.contrast, len(values)).reshape(-1, *[1] * len(spatial))
        delta += contrast * weight * local
        mask |= lesion
    floor = min(float(values.min()), 0.0)
    return np.maximum(values + delta, floor).astype(image.dtype), mask.astype(np.uint8)
