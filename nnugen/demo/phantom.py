"""Procedural phantom "MRI" scans written as an nnU-Net v2 raw dataset; nothing is downloaded.

Each case is a body ellipsoid (randomly sized, placed and rotated) holding an "organ" ellipsoid (label 1) and a
smaller "lesion" (label 2) that sits on the organ's border, so it lies partly inside it. The images have smooth
tissue textures, partial-volume edges, a smooth multiplicative bias field and Rician noise, in MRI-like units
(background near 0, tissues in the hundreds up to about 1000; not z-scored). Several channels are different
contrasts of the same anatomy (T1-, T2-, FLAIR- and PD-like). A case of 48^3 voxels takes a few tens of ms.

Geometry: ``shape`` and ``spacing`` are in array order, ``(z, y, x)`` in 3D and ``(y, x)`` in 2D, as nnU-Net
reports spacings. The world origin and direction are not trivial (a rotation about the world z axis and a flip of
the world x axis by default), so that geometry round-trips can be tested on these files.

2D datasets are written as true 2D NIfTI files (``dim[0] = 2``, an image of ``(y, x)``), not as 3D volumes of one
slice: nnU-Net's ``SimpleITKIO`` (the reader it picks for ``.nii.gz``) has a 2D branch that reads such a file as
``(1, 1, y, x)`` with a dummy spacing of 999 x the largest spacing along the first axis, plans only the ``2d``
configuration, and writes predictions back as 2D images with the input's 2D geometry.

Example::

    >>> from pathlib import Path
    >>> import numpy as np
    >>> images, label = make_phantom_case(PhantomSpec(shape=(32, 32, 32)), np.random.default_rng(0))
    >>> images[0].shape, label.dtype, sorted(np.unique(label).tolist())
    ((32, 32, 32), dtype('uint8'), [0, 1, 2])
"""

import math
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnugen.atomic_files import atomic_write_with
from nnugen.folders.dataset_json import write_dataset_json

LABELS = {"background": 0, "organ": 1, "lesion": 2}

# Nominal intensities of (body tissue, organ, lesion) per contrast, in arbitrary MRI-like units.
CONTRASTS: dict[str, tuple[float, float, float]] = {
    "T1": (550.0, 800.0, 300.0),
    "T2": (350.0, 550.0, 950.0),
    "FLAIR": (300.0, 650.0, 1000.0),
    "PD": (700.0, 780.0, 880.0),
}

# The world point at the centre of the field of view when PhantomSpec.origin is None (SimpleITK x, y, z order, mm).
_DEFAULT_CENTRE_MM = (12.0, -18.0, 30.0)
_MIN_SIZE = 16  # voxels per axis: below this the lesion may vanish between voxels
_MIN_ORGAN_VOXELS = 8
_MIN_LESION_VOXELS = 3


@dataclass(frozen=True)
class PhantomSpec:
    """What the phantom cases look like.

    Args:
        shape: image size in voxels, array order ((z, y, x) or (y, x)); two entries give 2D images.
        spacing: voxel size in mm, same order and length as ``shape``; anisotropic values are fine. None gives
            1 mm along every axis of ``shape``.
        n_channels: number of contrasts (1 to 4), named T1, T2, FLAIR, PD in that order.
        noise_std: Rician noise level as a fraction of the brightest nominal tissue intensity of the channel.
        bias_strength: standard deviation of the log bias field (0 turns the bias field off).
        rotation_deg: rotation of the image axes about the world z axis (the in-plane rotation in 2D).
        flip: flip the world x axis (direction matrix with determinant -1, as in many scanners' exports).
        origin: world position of the first voxel, SimpleITK (x, y, z) order, mm; None centres the field of view
            on a fixed, non-zero world point.
    """

    shape: tuple[int, ...] = (48, 48, 48)
    spacing: tuple[float, ...] | None = None
    n_channels: int = 1
    noise_std: float = 0.03
    bias_strength: float = 0.15
    rotation_deg: float = 8.0
    flip: bool = True
    origin: tuple[float, ...] | None = None

    def __post_init__(self):
        # Normalise sequences to tuples so that the spec stays hashable and compares by value.
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        spacing = (1.0,) * len(self.shape) if self.spacing is None else self.spacing
        object.__setattr__(self, "spacing", tuple(float(s) for s in spacing))
        if self.origin is not None:
            object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        if len(self.shape) not in (2, 3):
            raise ValueError(f"shape must have 2 (2D) or 3 (3D) entries, got {self.shape}")
        if min(self.shape) < _MIN_SIZE:
            raise ValueError(f"every axis of shape needs at least {_MIN_SIZE} voxels, got {self.shape}")
        if len(self.spacing) != len(self.shape):
            raise ValueError(f"spacing {self.spacing} must have one entry per axis of shape {self.shape}")
        if min(self.spacing) <= 0 or not all(math.isfinite(s) for s in self.spacing):
            raise ValueError(f"spacing must be positive and finite (mm), got {self.spacing}")
        if not 1 <= self.n_channels <= len(CONTRASTS):
            raise ValueError(f"n_channels must be between 1 and {len(CONTRASTS)} ({', '.join(CONTRASTS)}), "
                             f"got {self.n_channels}")
        if not 0 <= self.noise_std < 1:
            raise ValueError(f"noise_std is relative to the tissue intensity: use 0 <= noise_std < 1, "
                             f"got {self.noise_std}")
        if not 0 <= self.bias_strength <= 1:
            raise ValueError(f"bias_strength must be in [0, 1], got {self.bias_strength}")
        if self.origin is not None and len(self.origin) != len(self.shape):
            raise ValueError(f"origin {self.origin} must have one entry per axis of shape {self.shape}")

    @property
    def channel_names(self) -> dict[str, str]:
        """dataset.json's ``channel_names``: {"0": "T1", ...}."""
        return {str(i): name for i, name in enumerate(list(CONTRASTS)[: self.n_channels])}


def make_phantom_case(spec: PhantomSpec, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """One random case: ``n_channels`` float32 images and a uint8 label map, each of ``spec.shape`` (array order).

    Labels: 0 background (air and body tissue), 1 organ, 2 lesion. Both foreground labels are always present.
    """
    shape = spec.shape
    # Normalised coordinates in [-1, 1] per axis, so the anatomy fills the field of view for any spacing.
    grid = np.stack(np.meshgrid(*[(np.arange(n) - (n - 1) / 2) / (n / 2) for n in shape], indexing="ij"))
    body, organ, lesion = _anatomy(grid, rng)
    label = np.zeros(shape, np.uint8)
    label[organ] = LABELS["organ"]
    label[lesion] = LABELS["lesion"]

    texture = _smooth_field(shape, 1.5, rng)
    lesion_texture = _smooth_field(shape, 0.8, rng)
    bias = np.exp(spec.bias_strength * _bias_polynomial(grid, rng))
    images = []
    for name in list(CONTRASTS)[: spec.n_channels]:
        nominal = np.asarray(CONTRASTS[name])
        body_value, organ_value, lesion_value = nominal * rng.uniform(0.9, 1.1, 3)
        clean = np.zeros(shape)
        clean[body] = body_value * (1 + 0.08 * texture[body])
        clean[organ] = organ_value * (1 + 0.05 * texture[organ])
        clean[lesion] = lesion_value * (1 + 0.12 * lesion_texture[lesion])
        clean = _gaussian_blur(clean, 0.6) * bias * rng.uniform(0.85, 1.15)  # partial volume, bias, scanner gain
        sigma = spec.noise_std * nominal.max()
        # Rician noise: magnitude of a complex signal with Gaussian noise in both parts.
        noisy = np.hypot(clean + sigma * rng.standard_normal(shape), sigma * rng.standard_normal(shape))
        images.append(noisy.astype(np.float32))
    return images, label


def write_phantom_dataset(raw_root: Path, dataset_id: int, name: str, n_train: int, n_test: int = 0,
                          spec: PhantomSpec = PhantomSpec(), seed: int = 0, *, overwrite: bool = False) -> Path:
    """Write ``Dataset{dataset_id:03d}_{name}`` under ``raw_root`` in nnU-Net v2 raw format and return its folder.

    Training cases go to imagesTr / labelsTr, test cases to imagesTs / labelsTs, files are ``.nii.gz`` written
    through SimpleITK with the spec's geometry. Case ``i`` (training cases first, then test cases) depends only on
    ``(seed, i)`` and ``spec``, so a dataset is reproducible and adding cases does not change the earlier ones.
    Every file is written to a temporary name and renamed, so an interrupted run leaves no half-written image.
    """
    raw_root = Path(raw_root)
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset_id must be between 1 and 999 (nnU-Net's three digits), got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise ValueError(f"name must be letters, digits, '-' or '_' (e.g. 'Phantom'), got {name!r}")
    if n_train < 1 or n_test < 0:
        raise ValueError(f"need n_train >= 1 and n_test >= 0, got n_train={n_train}, n_test={n_test}")
    folder = raw_root / f"Dataset{dataset_id:03d}_{name}"
    clashes = [p.name for p in raw_root.glob(f"Dataset{dataset_id:03d}_*") if p != folder] if raw_root.is_dir() else []
    if clashes:
        raise ValueError(f"{raw_root} already holds {clashes} with dataset ID {dataset_id}; nnU-Net needs unique IDs, "
                         f"so pick another dataset_id or remove that folder")
    if folder.exists():
        if not overwrite:
            raise FileExistsError(f"{folder} exists; pass overwrite=True to rewrite it or delete it first")
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            shutil.rmtree(folder / sub, ignore_errors=True)

    for index in range(n_train + n_test):
        images_dir, labels_dir = ("imagesTr", "labelsTr") if index < n_train else ("imagesTs", "labelsTs")
        images, label = make_phantom_case(spec, np.random.default_rng([seed, index]))
        case = f"{name}_{index:03d}"
        for channel, image in enumerate(images):
            write_phantom_image(image, spec, folder / images_dir / f"{case}_{channel:04d}.nii.gz")
        write_phantom_image(label, spec, folder / labels_dir / f"{case}.nii.gz")

    write_dataset_json(folder, spec.channel_names, dict(LABELS), n_train, ".nii.gz", license="CC0",
                       overwrite_image_reader_writer="SimpleITKIO", dataset_name=name,
                       description="Procedural phantom MRI (body, organ, lesion) made by nnugen.demo.phantom",
                       reference="nnugen.demo.phantom.write_phantom_dataset",
                       nnugen_phantom={"seed": seed, "numTest": n_test, "spec": asdict(spec)})
    return folder


def write_unseen_phantom_images(dataset: Path, folder: Path, n: int) -> list[Path]:
    """``n`` more cases of a dataset written by ``write_phantom_dataset``, by its own recipe (the spec and seed its
    dataset.json records): the cases that would follow its training and test cases, so no model of the dataset saw
    them. Images only (``unseen_KKK_CCCC.nii.gz``, every channel) into ``folder``; returns the first channel's
    files. A reference for how far real cases of the same kind lie from the training cases."""
    import json

    described = json.loads((Path(dataset) / "dataset.json").read_text(encoding="utf-8"))
    meta = described.get("nnugen_phantom")
    if meta is None:
        raise ValueError(f"{dataset} was not written by write_phantom_dataset (its dataset.json has no "
                         "'nnugen_phantom' recipe); pass a phantom dataset")
    spec = PhantomSpec(**{key: tuple(value) if isinstance(value, list) else value
                          for key, value in meta["spec"].items()})
    first = int(described["numTraining"]) + int(meta["numTest"])
    written = []
    for k in range(n):
        images, _ = make_phantom_case(spec, np.random.default_rng([int(meta["seed"]), first + k]))
        for channel, image in enumerate(images):
            write_phantom_image(image, spec, Path(folder) / f"unseen_{k:03d}_{channel:04d}.nii.gz")
        written.append(Path(folder) / f"unseen_{k:03d}_0000.nii.gz")
    return written


def write_phantom_image(array: np.ndarray, spec: PhantomSpec, path: Path) -> None:
    """Write ``array`` (array order: an image or a label map of ``spec.shape``) as a NIfTI file with the spec's
    geometry, atomically; the parent folder is created."""
    image = sitk.GetImageFromArray(array)
    spacing, origin, direction = _geometry(spec)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    # SimpleITK picks the file format from the extension, so the temporary name keeps the ".nii.gz" ending.
    atomic_write_with(path, lambda tmp: sitk.WriteImage(image, str(tmp), useCompression=True), suffix=".nii.gz")


def _anatomy(grid: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks (body, organ, lesion) on ``grid`` (ndim, *shape) of normalised coordinates.

    The organ and lesion are clipped to the body; the lesion takes precedence over the organ. Resamples until both
    structures cover a few voxels (almost always the first draw).
    """
    ndim = grid.shape[0]
    for _ in range(50):
        body_centre = rng.uniform(-0.05, 0.05, ndim)
        body = _ellipsoid(grid, body_centre, rng.uniform(0.62, 0.9, ndim), _random_rotation(ndim, 0.4, rng))
        organ_centre = body_centre + rng.uniform(-0.15, 0.15, ndim)
        organ_axes = rng.uniform(0.3, 0.45, ndim)
        organ_rotation = _random_rotation(ndim, 0.6, rng)
        organ = _ellipsoid(grid, organ_centre, organ_axes, organ_rotation) & body
        # The lesion is centred just inside the organ's border and as large as half the organ's smallest
        # semi-axis, so part of it lies outside the organ.
        direction = rng.standard_normal(ndim)
        direction /= np.linalg.norm(direction)
        lesion_centre = organ_centre + organ_rotation @ (organ_axes * direction) * rng.uniform(0.7, 0.9)
        lesion_axes = organ_axes.min() * rng.uniform(0.35, 0.55, ndim)
        lesion = _ellipsoid(grid, lesion_centre, lesion_axes, _random_rotation(ndim, 1.0, rng)) & body
        organ &= ~lesion
        if organ.sum() >= _MIN_ORGAN_VOXELS and lesion.sum() >= _MIN_LESION_VOXELS:
            return body, organ, lesion
    raise RuntimeError("could not place an organ and a lesion in the phantom; use a larger shape")


def _ellipsoid(grid: np.ndarray, centre: np.ndarray, semi_axes: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Mask of the points x with ``|R^T (x - c) / a| <= 1``; ``grid`` is (ndim, *shape)."""
    offset = grid - centre.reshape(-1, *[1] * (grid.ndim - 1))
    local = np.tensordot(rotation.T, offset, axes=1)
    return np.einsum("i...,i...->...", local, local / (semi_axes ** 2).reshape(-1, *[1] * (grid.ndim - 1))) <= 1


def _random_rotation(ndim: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A random rotation matrix by the Cayley transform ``(I - A)^-1 (I + A)`` of a skew matrix A with entries of
    size up to ``scale`` (rotation angles up to about ``2 atan(scale)``)."""
    upper = np.triu(rng.uniform(-scale, scale, (ndim, ndim)), 1)
    skew = upper - upper.T
    eye = np.eye(ndim)
    return np.linalg.solve(eye - skew, eye + skew)


def _bias_polynomial(grid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random second-order polynomial of the coordinates with zero mean and unit standard deviation."""
    ndim = grid.shape[0]
    terms = [grid[i] for i in range(ndim)] + [grid[i] * grid[j] for i in range(ndim) for j in range(i, ndim)]
    field = sum(c * t for c, t in zip(rng.standard_normal(len(terms)), terms))
    return (field - field.mean()) / (field.std() + 1e-12)


def _gaussian_transfer(shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Fourier transform of a Gaussian of ``sigma`` voxels, laid out for ``np.fft.rfftn`` of ``shape``."""
    freqs = [np.fft.fftfreq(n) for n in shape[:-1]] + [np.fft.rfftfreq(shape[-1])]
    transfer = np.ones([len(f) for f in freqs])
    for axis, f in enumerate(freqs):
        view = [1] * len(shape)
        view[axis] = len(f)
        transfer = transfer * np.exp(-2 * (np.pi * sigma * f.reshape(view)) ** 2)
    return transfer


def _gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing by FFT (periodic borders, harmless here: the borders are air)."""
    return np.fft.irfftn(np.fft.rfftn(image) * _gaussian_transfer(image.shape, sigma), s=image.shape,
                          axes=range(image.ndim))


def _smooth_field(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise, rescaled to zero mean and unit standard deviation."""
    field = _gaussian_blur(rng.standard_normal(shape), sigma)
    return (field - field.mean()) / (field.std() + 1e-12)


def _geometry(spec: PhantomSpec) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
    """(spacing, origin, direction) in SimpleITK's (x, y, z) order for the spec."""
    ndim = len(spec.shape)
    spacing = spec.spacing[::-1]
    angle = math.radians(spec.rotation_deg)
    rotation = np.eye(ndim)
    rotation[:2, :2] = [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]]
    flip = np.diag([-1.0 if spec.flip else 1.0] + [1.0] * (ndim - 1))
    direction = rotation @ flip
    if spec.origin is not None:
        origin = np.asarray(spec.origin)
    else:
        half_extent = np.asarray(spacing) * (np.asarray(spec.shape[::-1]) - 1) / 2
        origin = np.asarray(_DEFAULT_CENTRE_MM[:ndim]) - direction @ half_extent
    return spacing, tuple(float(o) for o in origin), tuple(float(d) for d in direction.ravel())
