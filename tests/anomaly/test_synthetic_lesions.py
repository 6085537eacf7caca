"""The synthetic-lesion protocol: lesion families, insertion, and the nnU-Net raw dataset writer."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnugen.anomaly import (
    LESION_FAMILIES,
    TEST_FAMILIES,
    TUNING_FAMILIES,
    LesionFamily,
    body_mask,
    insert_lesions,
)
from nnugen.demo.lesion_dataset import write_lesion_dataset
from nnugen.demo.phantom import PhantomSpec, make_phantom_case

SPECS = {"3d": PhantomSpec(shape=(24, 32, 32), n_channels=2), "2d": PhantomSpec(shape=(48, 48), spacing=(1.0, 1.0))}


def _healthy(spec: PhantomSpec, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    images, _ = make_phantom_case(spec, np.random.default_rng(seed))
    image = np.stack(images)
    return image, body_mask(image[None])[0, 0]


def test_families_and_split():
    assert len(LESION_FAMILIES) >= 4
    assert set(TUNING_FAMILIES) | set(TEST_FAMILIES) <= set(LESION_FAMILIES)
    assert not set(TUNING_FAMILIES) & set(TEST_FAMILIES)  # the threshold is never chosen on a scored family
    for split in (TUNING_FAMILIES, TEST_FAMILIES):  # each split holds hyper- and hypo-intense lesions
        assert {np.sign(LESION_FAMILIES[f].contrast[0]) for f in split} == {-1, 1}
    assert {LESION_FAMILIES[f].shape for f in TUNING_FAMILIES} != {LESION_FAMILIES[f].shape for f in TEST_FAMILIES}
    assert len({(f.shape, f.radius, f.contrast) for f in LESION_FAMILIES.values()}) == len(LESION_FAMILIES)


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
@pytest.mark.parametrize("family", sorted(LESION_FAMILIES))
def test_insert_lesions_contrast_locality_and_determinism(spec, family):
    image, body = _healthy(spec)
    out, mask = insert_lesions(image, body, np.random.default_rng(1), family)
    again, mask_again = insert_lesions(image, body, np.random.default_rng(1), family)
    assert np.array_equal(out, again) and np.array_equal(mask, mask_again)
    assert out.shape == image.shape and out.dtype == image.dtype and mask.shape == spec.shape
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1} and not (mask.astype(bool) & ~body).any()
    change = (out - image)[:, mask > 0]
    sign = np.sign(LESION_FAMILIES[family].contrast[0])
    assert (sign * change > 0).all()  # hyper- or hypo-intense in every channel, inside the whole lesion
    relative = np.abs(change).mean() / image[:, mask > 0].mean()
    assert 0.2 < relative < 1.0  # relative to the tissue intensity
    far = ndimage.distance_transform_edt(mask == 0) > 5
    assert np.array_equal(out[:, far], image[:, far])  # nothing changes away from the lesions
    near = ndimage.binary_dilation(mask > 0) & ~(mask > 0)
    assert np.abs(out - image)[:, near].max() > 0  # a smooth edge, not a cut-out


def test_blobs_are_less_compact_than_ellipsoids():
    image, body = _healthy(SPECS["3d"])

    def compactness(family: str) -> float:
        values = []
        for seed in range(4):
            mask = insert_lesions(image, body, np.random.default_rng(seed), family)[1].astype(bool)
            values.append((mask & ~ndimage.binary_erosion(mask)).sum() / mask.sum() ** (2 / 3))
        return float(np.mean(values))

    assert min(compactness(f) for f in ("hyper_blobs", "hypo_blobs")) > \
        max(compactness(f) for f in ("hyper_spheres", "hypo_ellipsoids"))


def test_insert_lesions_bad_arguments():
    image, body = _healthy(SPECS["2d"])
    with pytest.raises(ValueError, match="unknown lesion family"):
        insert_lesions(image, body, np.random.default_rng(0), "tumour")
    with pytest.raises(ValueError, match="same grid"):
        insert_lesions(image, body[:10], np.random.default_rng(0), "hyper_blobs")
    with pytest.raises(ValueError, match="empty"):
        insert_lesions(image, np.zeros_like(body), np.random.default_rng(0), "hyper_blobs")
    with pytest.raises(ValueError, match="contrast"):
        LesionFamily("x", "blob", radius=(0.1, 0.2), count=(1, 1), contrast=(-0.2, 0.3))
    custom = LesionFamily("huge", "ellipsoid", radius=(0.2, 0.25), count=(1, 1), contrast=(1.0, 1.0))
    assert insert_lesions(image, body, np.random.default_rng(0), custom)[1].sum() > 50


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_lesion_dataset_layout_and_nnunet_integrity(tmp_path, monkeypatch, spec):
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    raw = tmp_path / "nnUNet_raw"
    folder = write_lesion_dataset(raw, 510, "Lesions", n_healthy_train=2, n_val_lesion=2, n_test_lesion=2, seed=3,
                                  spec=spec)
    assert folder == raw / "Dataset510_Lesions"
    assert not [p for p in raw.rglob(".*")]  # no temporary folder or file left behind
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "lesion": 1} and dataset["numTraining"] == 4
    assert (folder / "healthy_cases.txt").read_text().split() == ["Lesions_000", "Lesions_001"]
    families = dataset["nnugen_lesions"]["lesion_families"]
    assert [families[f"Lesions_{i:03d}"] for i in (2, 3)] == list(TUNING_FAMILIES)
    assert [families[f"Lesions_{i:03d}"] for i in (4, 5)] == list(TEST_FAMILIES)
    n_channels = spec.n_channels
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == [
        f"Lesions_{i:03d}_{c:04d}.nii.gz" for i in (4, 5) for c in range(n_channels)]

    def label(split: str, index: int) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(folder / split / f"Lesions_{index:03d}.nii.gz")))

    assert all(not label("labelsTr", i).any() for i in (0, 1))  # healthy cases: all-zero labels
    assert all(set(np.unique(label("labelsTr", i))) == {0, 1} for i in (2, 3))
    assert all(set(np.unique(label("labelsTs", i))) == {0, 1} for i in (4, 5))
    # healthy training images are the phantom's own cases, unchanged
    healthy = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "imagesTr" / "Lesions_001_0000.nii.gz")))
    assert np.array_equal(healthy, make_phantom_case(spec, np.random.default_rng([3, 1]))[0][0])

    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(folder), num_processes=1)  # raises on any problem

    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_lesion_dataset(raw, 510, "Lesions", 1, 1, 0, spec=spec)
    folder = write_lesion_dataset(raw, 510, "Lesions", 1, 1, 0, spec=spec, overwrite=True)
    assert not (folder / "imagesTs").exists() and len(list((folder / "labelsTr").iterdir())) == 2
    assert not [p for p in raw.rglob(".*")]
    with pytest.raises(ValueError, match="unique"):
        write_lesion_dataset(raw, 510, "Other", 1, 1, 0, spec=spec)
    with pytest.raises(ValueError, match="n_val_lesion >= 1"):
        write_lesion_dataset(raw, 511, "Other", 1, 0, 0, spec=spec)
