"""The synthetic-lesion protocol: lesions of known shape and contrast inserted into healthy anatomy.

This checks the machinery (counterfactuals, maps, post-processing, threshold selection, metrics, the dataset
plumbing) on data where the answer is known; it says nothing about performance on real pathology, whose shapes,
contrasts and mass effects no procedural family captures. Published numbers (e.g. BraTS) need real data.

Lesion families differ in shape (near-spherical or elongated ellipsoids; irregular blobs, i.e. an ellipsoid whose
border is pushed in and out by thresholded smooth noise), size, number and contrast (hyper- or hypo-intense, relative
to the local tissue intensity, with a smooth edge). The families that choose the threshold (``TUNING_FAMILIES``) are
not the families scored (``TEST_FAMILIES``), so the test score is not tuned on the lesions it measures.

``write_lesion_dataset`` writes an nnU-Net v2 raw dataset of phantom cases (``nnugen.demo.phantom``): healthy
training cases with all-zero labels (listed in ``healthy_cases.txt``), validation cases with tuning-family lesions in
imagesTr / labelsTr, and test cases with test-family lesions in imagesTs / labelsTs; labels {background 0, lesion 1}.
The phantom's own "organ" and "lesion" structures are part of every case, so they are normal anatomy here; only the
inserted lesions are labelled. nnU-Net 2.8.1's fingerprint extraction crashes on a dataset whose labels are all
background; the validation lesion cases in imagesTr carry foreground, so the dataset as a whole has some (hence at
least one validation case is required).

With ``anatomy_channel=True`` every case gets one more input channel, last: the body mask in which lesions are placed
(1 inside, 0 outside; the same mask for healthy cases), for ``anomaly.condition_channel``. nnU-Net picks a channel's
normalisation from its name, so the channel is named ``noNorm`` (``ANATOMY_CHANNEL``): preprocessing then resamples
it but leaves its values alone.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from nnugen.anomaly.anomaly_map import body_mask
from nnugen.anomaly.healthy_cases import HEALTHY_CASES_FILE

if TYPE_CHECKING:
    from nnugen.demo.phantom import PhantomSpec

SHAPES = ("ellipsoid", "blob")
LESION_LABELS = {"background": 0, "lesion": 1}
ANATOMY_CHANNEL = "noNorm"
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


def write_lesion_dataset(raw_root: str | os.PathLike, dataset_id: int, name: str, n_healthy_train: int,
                         n_val_lesion: int, n_test_lesion: int, seed: int = 0, spec: PhantomSpec | None = None,
                         *, overwrite: bool = False, anatomy_channel: bool = False) -> Path:
    """Write ``Dataset{dataset_id:03d}_{name}`` (see the module docstring) under ``raw_root``; returns the folder.

    Cases are numbered healthy, then validation, then test; case i's anatomy depends only on (seed, i) and
    ``spec`` (as in write_phantom_dataset), its lesions on (seed, i, 1). Validation cases cycle through
    TUNING_FAMILIES, test cases through TEST_FAMILIES; dataset.json's ``nnugen_lesions`` records which case got
    which family. The dataset is built in a hidden temporary folder and renamed into place, files atomically.
    ``anatomy_channel``: also write the body mask the lesions are placed in, as a last channel (see the module
    docstring).
    """
    from nnugen.atomic_files import atomic_write_json, atomic_write_text
    from nnugen.demo.phantom import PhantomSpec, _write_image, make_phantom_case

    spec = PhantomSpec() if spec is None else spec
    raw_root = Path(raw_root)
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset_id must be between 1 and 999 (nnU-Net's three digits), got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise ValueError(f"name must be letters, digits, '-' or '_' (e.g. 'Lesions'), got {name!r}")
    if n_healthy_train < 1 or n_val_lesion < 1 or n_test_lesion < 0:
        raise ValueError(f"need n_healthy_train >= 1, n_val_lesion >= 1 (nnU-Net needs some foreground in imagesTr) "
                         f"and n_test_lesion >= 0; got {n_healthy_train}, {n_val_lesion}, {n_test_lesion}")
    folder = raw_root / f"Dataset{dataset_id:03d}_{name}"
    clashes = [p.name for p in raw_root.glob(f"Dataset{dataset_id:03d}_*") if p != folder] if raw_root.is_dir() else []
    if clashes:
        raise ValueError(f"{raw_root} already holds {clashes} with dataset ID {dataset_id}; nnU-Net needs unique IDs, "
                         "so pick another dataset_id or remove that folder")
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} exists; pass overwrite=True to rewrite it or delete it first")

    raw_root.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    temporary = raw_root / f".{folder.name}.tmp-{token}"
    temporary.mkdir()
    n_train = n_healthy_train + n_val_lesion
    healthy, families = [], {}
    try:
        for index in range(n_train + n_test_lesion):
            case = f"{name}_{index:03d}"
            images, _anatomy = make_phantom_case(spec, np.random.default_rng([seed, index]))
            image = np.stack(images)
            body = body_mask(image[None])[0, 0]
            if index < n_healthy_train:
                label = np.zeros(spec.shape, np.uint8)
                healthy.append(case)
            else:
                k = index - (n_healthy_train if index < n_train else n_train)
                families[case] = (TUNING_FAMILIES if index < n_train else TEST_FAMILIES)[k % 2]
                image, label = insert_lesions(image, body, np.random.default_rng([seed, index, 1]), families[case])
            if anatomy_channel:
                image = np.concatenate([image, body[None].astype(image.dtype)])
            images_dir, labels_dir = ("imagesTr", "labelsTr") if index < n_train else ("imagesTs", "labelsTs")
            for channel, array in enumerate(image):
                _write_image(array, spec, temporary / images_dir / f"{case}_{channel:04d}.nii.gz")
            _write_image(label, spec, temporary / labels_dir / f"{case}.nii.gz")
        atomic_write_text(temporary / HEALTHY_CASES_FILE, "".join(f"{case}\n" for case in healthy))
        channel_names = dict(spec.channel_names)
        if anatomy_channel:
            channel_names[str(len(channel_names))] = ANATOMY_CHANNEL
        atomic_write_json(temporary / "dataset.json", {
            "channel_names": channel_names,
            "labels": dict(LESION_LABELS),
            "numTraining": n_train,
            "file_ending": ".nii.gz",
            "overwrite_image_reader_writer": "SimpleITKIO",
            "name": name,
            "description": "Phantom MRI with synthetic lesions (nnugen.anomaly.synthetic_lesions): healthy training "
                           "cases (healthy_cases.txt), validation and test cases with lesions of different families",
            "reference": "nnugen.anomaly.synthetic_lesions.write_lesion_dataset",
            "licence": "CC0",
            "nnugen_lesions": {"seed": seed, "numTest": n_test_lesion, "healthy_cases": healthy,
                               "lesion_families": families, "tuning_families": list(TUNING_FAMILIES),
                               "test_families": list(TEST_FAMILIES), "spec": asdict(spec)},
        })
        previous = raw_root / f".{folder.name}.old-{token}"
        if folder.exists():
            os.replace(folder, previous)
        os.replace(temporary, folder)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return folder
