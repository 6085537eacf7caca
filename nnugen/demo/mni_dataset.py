"""A demo dataset from real scans that ship inside a pip package, nothing downloaded: nilearn bundles the MNI152
2009 template (T1) with grey- and white-matter probability maps and a brain mask. What is real and what is not:

- REAL: one scan, the MNI152 template (an average of 152 adult T1 MRIs), and its tissue maps, at 3 mm;
- AUGMENTED: every case is that one scan under a random affine and elastic deformation, a smooth bias field,
  Rician noise and a global intensity scale; labels (1 grey matter, 2 white matter, from the maps) move with it.

So it shows the pipeline on real anatomy and real MRI contrast; it is not a benchmark of generalisation.

Two layouts: ``write_mni_dataset``, whole 3 mm volumes (3d_fullres), and ``write_mni_slice_dataset``, the
brain-middle slices of the same volumes as 2D cases (what ``nnugen_demo --real`` and the 2D benchmarks use: a 2D
generator learns real anatomy within minutes of a CPU, a 3D one does not). Each records its recipe in dataset.json,
so ``write_unseen_mni_images`` can write real cases that no model saw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnugen.atomic_files import atomic_write_with
from nnugen.folders.dataset_json import write_dataset_json

LABELS = {"background": 0, "grey_matter": 1, "white_matter": 2}
RESOLUTION_MM = 3
PROVENANCE = ("REAL: the MNI152 2009 T1 template and its grey/white-matter maps bundled with nilearn (one scan). "
              "AUGMENTED: each case is that scan under a random affine + elastic deformation, bias field and noise.")


def load_mni152() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(T1 image, label map, spacing) cropped to the brain with a margin, in array order (z, y, x)."""
    try:
        from nilearn import datasets
    except ImportError:
        raise ValueError("the real-scan demo needs nilearn: pip install 'nnugen[real]'") from None
    t1 = np.asarray(datasets.load_mni152_template(resolution=RESOLUTION_MM).dataobj, dtype=np.float32)
    grey = np.asarray(datasets.load_mni152_gm_template(resolution=RESOLUTION_MM).dataobj, dtype=np.float32)
    white = np.asarray(datasets.load_mni152_wm_template(resolution=RESOLUTION_MM).dataobj, dtype=np.float32)
    brain = np.asarray(datasets.load_mni152_brain_mask(resolution=RESOLUTION_MM).dataobj) > 0
    label = np.zeros(t1.shape, np.uint8)
    label[brain & (grey >= 0.5) & (grey >= white)] = 1
    label[brain & (white >= 0.5) & (white > grey)] = 2
    # nibabel arrays are (x, y, z); SimpleITK arrays are (z, y, x)
    t1, label = t1.transpose(2, 1, 0), label.transpose(2, 1, 0)
    box = tuple(slice(max(0, int(i.min()) - 2), int(i.max()) + 3) for i in np.nonzero(t1 > 0.05 * t1.max()))
    return t1[box] * 1000.0, label[box], np.full(3, float(RESOLUTION_MM))


def augmented_case(t1: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random deformation (affine + smooth elastic) of the scan, with bias field, noise and intensity scale."""
    from scipy import ndimage

    shape = np.asarray(t1.shape)
    centre = (shape - 1) / 2
    angles = np.deg2rad(rng.uniform(-8, 8, 3))
    rotation = np.eye(3)
    for axis, angle in enumerate(angles):
        a, b = [i for i in range(3) if i != axis]
        turn = np.eye(3)
        turn[[a, a, b, b], [a, b, a, b]] = [np.cos(angle), -np.sin(angle), np.sin(angle), np.cos(angle)]
        rotation = rotation @ turn
    matrix = rotation * rng.uniform(0.92, 1.08)
    grid = np.indices(t1.shape, dtype=np.float32).reshape(3, -1) - centre[:, None]
    coordinates = matrix @ grid + centre[:, None] + rng.uniform(-2, 2, 3)[:, None]
    elastic = [ndimage.gaussian_filter(rng.standard_normal(t1.shape), 4).ravel() for _ in range(3)]
    coordinates = coordinates + 2.0 * np.asarray(elastic) / max(1e-6, float(np.std(elastic)))
    image = ndimage.map_coordinates(t1, coordinates, order=1, mode="constant").reshape(t1.shape)
    labels = ndimage.map_coordinates(label, coordinates, order=0, mode="constant").reshape(t1.shape)
    bias = np.exp(0.15 * ndimage.gaussian_filter(rng.standard_normal(t1.shape), 12) /
                  max(1e-6, float(ndimage.gaussian_filter(rng.standard_normal(t1.shape), 12).std())))
    sigma = 0.03 * float(image.max())
    noisy = np.hypot(image * bias * rng.uniform(0.85, 1.15) + rng.normal(0, sigma, t1.shape),
                     rng.normal(0, sigma, t1.shape))
    return noisy.astype(np.float32), labels.astype(np.uint8)


def brain_slices(image: np.ndarray, label: np.ndarray, axis: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The slices along ``axis`` of a (z, y, x) volume whose labelled area is at least half the largest (the brain's
    middle, where a slice is a brain picture and not a rim), each (1, Y, X) as an nnU-Net 2D case."""
    areas = (np.moveaxis(label, axis, 0) > 0).reshape(label.shape[axis], -1).sum(1)
    keep = np.nonzero(areas >= 0.5 * areas.max())[0]
    return [(np.take(image, [i], axis).swapaxes(0, axis), np.take(label, [i], axis).swapaxes(0, axis)) for i in keep]


def _write(array: np.ndarray, spacing: np.ndarray, path: Path) -> None:
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_with(path, lambda tmp: sitk.WriteImage(image, str(tmp), useCompression=True), suffix=".nii.gz")


def write_mni_dataset(raw_root: Path, dataset_id: int, name: str, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write ``Dataset{id}_{name}`` (imagesTr/labelsTr/imagesTs/labelsTs, dataset.json) of augmented MNI152 cases."""
    t1, label, spacing = load_mni152()
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    for index in range(n_train + n_test):
        image, labels = augmented_case(t1, label, np.random.default_rng([seed, index]))
        split = "Tr" if index < n_train else "Ts"
        case = f"{name}_{index:03d}"
        _write(image, spacing, folder / f"images{split}" / f"{case}_0000.nii.gz")
        _write(labels, spacing, folder / f"labels{split}" / f"{case}.nii.gz")
    write_dataset_json(folder, {"0": "T1"}, dict(LABELS), n_train, ".nii.gz", dataset_name=name,
                       description=PROVENANCE, license="MNI152 2009 template: see nilearn's documentation",
                       nnugen_mni={"seed": seed, "numTest": n_test})
    return folder


def write_mni_slice_dataset(raw_root: Path, dataset_id: int, name: str, train_volumes: int, test_volumes: int,
                            axis: int = 0, test_stride: int = 1, seed: int = 0) -> Path:
    """Write ``Dataset{id}_{name}`` of 2D cases: the brain-middle slices (``brain_slices``) along the array ``axis``
    (0 axial, 1 coronal) of ``write_mni_dataset``'s volumes. Every slice of the first ``train_volumes`` volumes goes
    to imagesTr / labelsTr, every ``test_stride``-th slice of the next ``test_volumes`` to imagesTs / labelsTs; case
    ``{name}_{volume:02d}{slice:02d}``. A dataset already written (its dataset.json) is left as it is."""
    if train_volumes < 1 or test_volumes < 0 or test_stride < 1 or axis not in (0, 1, 2):
        raise ValueError(f"need train_volumes >= 1, test_volumes >= 0, test_stride >= 1 and axis 0, 1 or 2; got "
                         f"{train_volumes}, {test_volumes}, {test_stride} and {axis}")
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    if (folder / "dataset.json").is_file():
        return folder
    t1, label, spacing = load_mni152()
    count = 0
    for volume in range(train_volumes + test_volumes):
        image, labels = augmented_case(t1, label, np.random.default_rng([seed, volume]))
        split = "Tr" if volume < train_volumes else "Ts"
        for index, (image_slice, label_slice) in enumerate(brain_slices(image, labels, axis)):
            if split == "Ts" and index % test_stride:
                continue
            case = f"{name}_{volume:02d}{index:02d}"
            _write(image_slice, spacing, folder / f"images{split}" / f"{case}_0000.nii.gz")
            _write(label_slice, spacing, folder / f"labels{split}" / f"{case}.nii.gz")
            count += split == "Tr"
    recipe = {"seed": seed, "volumes": train_volumes + test_volumes, "axis": axis, "stride": test_stride}
    write_dataset_json(folder, {"0": "T1"}, dict(LABELS), count, ".nii.gz", dataset_name=name,
                       description=f"Brain-middle slices along array axis {axis} of augmented volumes. " + PROVENANCE,
                       license="MNI152 2009 template: see nilearn's documentation", nnugen_mni_slices=recipe)
    return folder


def write_unseen_mni_images(dataset: Path, folder: Path, n: int) -> list[Path]:
    """``n`` more augmented cases of a dataset written by ``write_mni_dataset`` or ``write_mni_slice_dataset`` (its
    recipe from dataset.json), images only (``unseen_KKK_0000.nii.gz``) into ``folder``: the volumes that would
    follow its training and test volumes, whole, or every ``stride``-th of their brain-middle slices."""
    import json

    described = json.loads((Path(dataset) / "dataset.json").read_text(encoding="utf-8"))
    volumes, slices = described.get("nnugen_mni"), described.get("nnugen_mni_slices")
    if volumes is None and slices is None:
        raise ValueError(f"{dataset} was not written by write_mni_dataset or write_mni_slice_dataset (its "
                         "dataset.json has no 'nnugen_mni' recipe); rewrite it with nnugen_demo --real in a new "
                         "work folder")
    recipe = volumes or slices
    t1, label, spacing = load_mni152()
    volume = int(described["numTraining"]) + int(recipe["numTest"]) if volumes else int(recipe["volumes"])
    written: list[Path] = []
    while len(written) < n:
        image, labels = augmented_case(t1, label, np.random.default_rng([int(recipe["seed"]), volume]))
        images = [image] if volumes else [s for s, _ in brain_slices(image, labels, int(recipe["axis"]))]
        for unseen in images[:: 1 if volumes else int(recipe["stride"])][: n - len(written)]:
            written.append(Path(folder) / f"unseen_{len(written):03d}_0000.nii.gz")
            _write(unseen, spacing, written[-1])
        volume += 1
    return written
