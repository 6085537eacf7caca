"""The phantom dataset writer: deterministic, MRI-like, 2D and 3D, and accepted by nnU-Net's integrity check."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnugen.demo.phantom import (
    CONTRASTS,
    LABELS,
    PhantomSpec,
    make_phantom_case,
    write_phantom_dataset,
    write_unseen_phantom_images,
)

SPEC_3D = PhantomSpec(shape=(16, 32, 40), spacing=(3.0, 0.8, 0.8), n_channels=2)
SPEC_2D = PhantomSpec(shape=(40, 48), spacing=(0.7, 0.7), n_channels=2)


@pytest.mark.parametrize("spec", [SPEC_3D, SPEC_2D], ids=["3d", "2d"])
def test_case_shapes_labels_and_intensities(spec):
    for seed in range(4):
        images, label = make_phantom_case(spec, np.random.default_rng(seed))
        assert len(images) == spec.n_channels
        assert label.shape == spec.shape and label.dtype == np.uint8
        assert set(np.unique(label).tolist()) == set(LABELS.values())
        for image in images:
            assert image.shape == spec.shape and image.dtype == np.float32
            assert np.isfinite(image).all() and image.min() >= 0  # Rician magnitudes are non-negative
            air = np.median(image[tuple(slice(0, 2) for _ in spec.shape)])  # a corner lies outside the body
            organ = np.median(image[label == LABELS["organ"]])
            lesion = np.median(image[label == LABELS["lesion"]])
            assert air < 0.1 * min(organ, lesion)  # background near 0, not z-scored
            assert 150 < organ < 1500 and 150 < lesion < 1500 and image.max() < 3000
        # the contrasts differ: the lesion is darker than the organ in T1, brighter in T2
        t1, t2 = images
        assert np.median(t1[label == 2]) < np.median(t1[label == 1])
        assert np.median(t2[label == 2]) > np.median(t2[label == 1])


def test_deterministic_for_a_seed_and_different_across_seeds():
    first = make_phantom_case(SPEC_3D, np.random.default_rng(7))
    again = make_phantom_case(SPEC_3D, np.random.default_rng(7))
    other = make_phantom_case(SPEC_3D, np.random.default_rng(8))
    for a, b in zip(first[0], again[0]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])


def test_all_channels():
    spec = PhantomSpec(n_channels=len(CONTRASTS))
    assert list(spec.channel_names.values()) == list(CONTRASTS)
    images, label = make_phantom_case(spec, np.random.default_rng(0))
    assert len(images) == len(CONTRASTS) and label.shape == (48, 48, 48)


def test_default_spacing_follows_the_shape():
    """The 2D demo builds its spec from the shape alone; the default spacing must fit it."""
    assert PhantomSpec(shape=(96, 96)).spacing == (1.0, 1.0)
    assert PhantomSpec(shape=(16, 24, 24)).spacing == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("kwargs", [dict(shape=(48, 48, 48, 2)), dict(shape=(8, 48, 48)), dict(spacing=(1.0, 1.0)),
                                    dict(spacing=(0.0, 1.0, 1.0)), dict(n_channels=0), dict(n_channels=9),
                                    dict(noise_std=-0.1), dict(origin=(0.0, 0.0))])
def test_bad_spec_raises(kwargs):
    with pytest.raises(ValueError):
        PhantomSpec(**kwargs)


@pytest.mark.parametrize("spec", [SPEC_3D, SPEC_2D], ids=["3d", "2d"])
def test_dataset_layout_geometry_and_nnunet_integrity(tmp_path, monkeypatch, spec):
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    raw = tmp_path / "nnUNet_raw"
    folder = write_phantom_dataset(raw, 501, "Phantom", n_train=3, n_test=1, spec=spec, seed=3)
    assert folder == raw / "Dataset501_Phantom"

    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert dataset_json["labels"] == {"background": 0, "organ": 1, "lesion": 2}
    assert dataset_json["channel_names"] == {"0": "T1", "1": "T2"}
    assert dataset_json["numTraining"] == 3 and dataset_json["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [
        f"Phantom_{i:03d}_{c:04d}.nii.gz" for i in range(3) for c in range(2)]
    assert sorted(p.name for p in (folder / "labelsTs").iterdir()) == ["Phantom_003.nii.gz"]
    assert not [p for p in folder.rglob(".*")]  # no temporary files left behind

    # The files hold make_phantom_case's arrays with a non-trivial geometry that survives the round trip.
    images, label = make_phantom_case(spec, np.random.default_rng([3, 1]))
    written = sitk.ReadImage(str(folder / "imagesTr" / "Phantom_001_0001.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), images[1])
    written_label = sitk.ReadImage(str(folder / "labelsTr" / "Phantom_001.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written_label), label)
    assert written.GetDimension() == len(spec.shape)
    np.testing.assert_allclose(written.GetSpacing(), spec.spacing[::-1], rtol=1e-6)
    direction = np.asarray(written.GetDirection()).reshape(len(spec.shape), -1)
    assert np.linalg.det(direction) == pytest.approx(-1, abs=1e-5)  # flipped
    assert not np.allclose(np.abs(direction), np.eye(len(spec.shape)))  # and rotated
    assert np.abs(written.GetOrigin()).max() > 1

    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    verify_dataset_integrity(str(folder), num_processes=1)  # raises on any problem
    data, properties = SimpleITKIO().read_images([str(folder / "imagesTr" / "Phantom_000_0000.nii.gz")])
    if len(spec.shape) == 2:  # nnU-Net's 2D branch: (1, 1, y, x) with a dummy spacing along the first axis
        assert data.shape == (1, 1, *spec.shape)
        np.testing.assert_allclose(properties["spacing"][1:], spec.spacing, rtol=1e-6)
        assert properties["spacing"][0] > 100
    else:
        assert data.shape == (1, *spec.shape)
        np.testing.assert_allclose(properties["spacing"], spec.spacing, rtol=1e-6)


def test_cases_do_not_depend_on_dataset_size(tmp_path):
    small = write_phantom_dataset(tmp_path / "a", 1, "P", n_train=1, spec=SPEC_2D, seed=5)
    large = write_phantom_dataset(tmp_path / "b", 1, "P", n_train=2, n_test=1, spec=SPEC_2D, seed=5)
    for relative in ("imagesTr/P_000_0000.nii.gz", "labelsTr/P_000.nii.gz"):
        a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(f / relative))) for f in (small, large))
        np.testing.assert_array_equal(a, b)
    assert not (small / "imagesTs").exists()


def test_unseen_cases_are_the_ones_that_follow_the_dataset(tmp_path):
    # the generation demo's real reference: cases of the dataset's own recipe that are neither training nor test cases
    dataset = write_phantom_dataset(tmp_path / "a", 1, "P", n_train=2, n_test=1, spec=SPEC_2D, seed=5)
    longer = write_phantom_dataset(tmp_path / "b", 1, "P", n_train=5, spec=SPEC_2D, seed=5)
    written = write_unseen_phantom_images(dataset, tmp_path / "unseen", 2)
    assert [f.name for f in written] == ["unseen_000_0000.nii.gz", "unseen_001_0000.nii.gz"]
    assert (tmp_path / "unseen" / "unseen_001_0001.nii.gz").is_file()  # every channel
    for k, file in enumerate(written):
        expected = sitk.ReadImage(str(longer / "imagesTr" / f"P_{3 + k:03d}_0000.nii.gz"))
        image = sitk.ReadImage(str(file))
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(expected))
        assert image.GetSpacing() == expected.GetSpacing() and image.GetDirection() == expected.GetDirection()
    (dataset / "dataset.json").write_text(json.dumps({"numTraining": 2}))
    with pytest.raises(ValueError, match="write_phantom_dataset"):
        write_unseen_phantom_images(dataset, tmp_path / "other", 1)


def test_existing_folder_and_clashing_ids(tmp_path):
    write_phantom_dataset(tmp_path, 7, "P", n_train=2, spec=SPEC_2D)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_phantom_dataset(tmp_path, 7, "P", n_train=1, spec=SPEC_2D)
    folder = write_phantom_dataset(tmp_path, 7, "P", n_train=1, spec=SPEC_2D, overwrite=True)
    assert len(list((folder / "labelsTr").iterdir())) == 1  # stale cases are gone
    with pytest.raises(ValueError, match="unique"):
        write_phantom_dataset(tmp_path, 7, "Other", n_train=1, spec=SPEC_2D)
    with pytest.raises(ValueError):
        write_phantom_dataset(tmp_path, 8, "bad name", n_train=1, spec=SPEC_2D)


def test_imports_neither_torch_nor_nnunetv2():
    code = ("import sys, nnugen.demo.phantom, nnugen_planner.dataset_check; "
            "print([m for m in ('torch', 'nnunetv2') if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2])
    assert result.stdout.strip() == "[]"
