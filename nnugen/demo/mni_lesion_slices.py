"""2D slices of the augmented MNI152 volumes (``nnugen.demo.mni_dataset``) with synthetic lesions
(``nnugen.anomaly.synthetic_lesions``): an nnU-Net raw dataset for counterfactual anomaly segmentation on real anatomy
(issue 18 part 4), laid out as ``write_lesion_dataset``'s phantom one so that the anomaly benchmark reads both alike.

The volumes are write_mni_dataset's (volume i from seed [0, i]: the slices of generation_curve_2d.py), sliced along
``axis`` keeping the brain's middle (``brain_slices``); each slice is one case (1 x Y x X), labels {background 0,
lesion 1}. Of ``train_volumes + 3`` volumes:

- the first ``train_volumes``: every kept slice, healthy, for training (imagesTr, all-zero labels);
- the next one: every ``stride``-th kept slice with lesions of the tuning families (imagesTr / labelsTr; the threshold);
- the next one: every ``stride``-th kept slice with lesions of the test families (imagesTs / labelsTs; scored);
- the last one: every ``stride``-th kept slice, healthy and held out (imagesTr, listed last among the healthy cases,
  their number in ``nnugen_lesions["held_out_healthy"]``; scored with the test slices).

Lesions go inside the brain: the slice's grey- and white-matter label with its holes filled (ventricles included).
Families alternate slice by slice (TUNING_FAMILIES, TEST_FAMILIES); a slice's lesions depend on (seed, volume, slice).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnugen.anomaly.healthy_cases import HEALTHY_CASES_FILE
from nnugen.anomaly.synthetic_lesions import TEST_FAMILIES, TUNING_FAMILIES, insert_lesions
from nnugen.atomic_files import atomic_write_text
from nnugen.demo.lesion_dataset import LESION_LABELS, lesions_entry
from nnugen.demo.mni_dataset import PROVENANCE, _write, augmented_case, brain_slices, load_mni152
from nnugen.folders.dataset_json import write_dataset_json


def write_mni_lesion_slices(raw_root: str | Path, dataset_id: int, name: str, train_volumes: int = 12,
                            stride: int = 3, seed: int = 1, axis: int = 0) -> Path:
    """Write ``Dataset{dataset_id:03d}_{name}`` (see the module docstring) under ``raw_root``; returns the folder.
    ``axis``: the (z, y, x) array axis sliced along (0 axial, 1 coronal); ``seed``: the lesions' seed."""
    if train_volumes < 1 or stride < 1:
        raise ValueError(f"need train_volumes >= 1 and stride >= 1, got {train_volumes} and {stride}")
    folder = Path(raw_root) / f"Dataset{dataset_id:03d}_{name}"
    t1, label, spacing = load_mni152()
    healthy, held_out, families = [], [], {}
    roles = ["train"] * train_volumes + ["tuning", "test", "held_out"]
    for volume, role in enumerate(roles):
        image, labels = augmented_case(t1, label, np.random.default_rng([0, volume]))
        slices = brain_slices(image, labels, axis)
        for index, (image_slice, label_slice) in enumerate(slices if role == "train" else slices[::stride]):
            case = f"{name}_{volume:02d}{index:02d}"
            kinds = {"tuning": TUNING_FAMILIES, "test": TEST_FAMILIES}.get(role)
            lesion = np.zeros_like(label_slice)
            if kinds is None:
                (held_out if role == "held_out" else healthy).append(case)
            else:
                families[case] = kinds[index % len(kinds)]
                brain = brain_mask(label_slice[0])
                image_slice, lesion = insert_lesions(image_slice, brain, np.random.default_rng([seed, volume, index]),
                                                     families[case])
                lesion = lesion[None]
            split = "Ts" if role == "test" else "Tr"
            _write(image_slice, spacing, folder / f"images{split}" / f"{case}_0000.nii.gz")
            _write(lesion, spacing, folder / f"labels{split}" / f"{case}.nii.gz")
    atomic_write_text(folder / HEALTHY_CASES_FILE, "".join(f"{case}\n" for case in [*healthy, *held_out]))
    n_test = sum(1 for case in families if (folder / "labelsTs" / f"{case}.nii.gz").is_file())
    entry = lesions_entry(seed, n_test, [*healthy, *held_out], families, held_out_healthy=len(held_out),
                          anatomy={"source": "mni152", "train_volumes": train_volumes, "stride": stride, "axis": axis})
    write_dataset_json(folder, {"0": "T1"}, dict(LESION_LABELS), len(healthy) + len(held_out) + len(families) - n_test,
                       ".nii.gz", dataset_name=name, license="MNI152 2009 template: see nilearn's documentation",
                       overwrite_image_reader_writer="SimpleITKIO", nnugen_lesions=entry,
                       description="Slices of augmented MNI152 volumes with synthetic lesions "
                                   "(nnugen.demo.mni_lesion_slices). " + PROVENANCE)
    return folder


def brain_mask(label: np.ndarray) -> np.ndarray:
    """The brain of one label slice: grey or white matter, holes (ventricles) filled."""
    from scipy import ndimage

    return ndimage.binary_fill_holes(label > 0)
