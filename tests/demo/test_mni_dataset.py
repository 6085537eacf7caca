"""The MNI152 demo dataset's unseen cases (the generation demo's real reference): the augmented cases that follow
the dataset's own training and test cases, from the seed its dataset.json records."""

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnugen.demo.mni_dataset import write_mni_dataset, write_unseen_mni_images


def test_unseen_cases_are_the_ones_that_follow_the_dataset(tmp_path):
    dataset = write_mni_dataset(tmp_path / "a", 1, "M", n_train=1, n_test=1, seed=3)
    longer = write_mni_dataset(tmp_path / "b", 1, "M", n_train=3, n_test=0, seed=3)
    assert json.loads((dataset / "dataset.json").read_text())["nnugen_mni"] == {"seed": 3, "numTest": 1}
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    verify_dataset_integrity(str(dataset), num_processes=1)  # raises on any problem; the demo skips the check
    (written,) = write_unseen_mni_images(dataset, tmp_path / "unseen", 1)
    assert written.name == "unseen_000_0000.nii.gz"
    expected = sitk.ReadImage(str(longer / "imagesTr" / "M_002_0000.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(written))),
                                  sitk.GetArrayFromImage(expected))
    (dataset / "dataset.json").write_text(json.dumps({"numTraining": 1}))
    with pytest.raises(ValueError, match="write_mni_dataset"):
        write_unseen_mni_images(dataset, tmp_path / "other", 1)


def test_a_slice_dataset_holds_brain_middle_slices_and_its_unseen_slices_follow_it(tmp_path):
    from nnugen.demo.mni_dataset import augmented_case, brain_slices, load_mni152, write_mni_slice_dataset

    dataset = write_mni_slice_dataset(tmp_path, 7, "S", train_volumes=1, test_volumes=1, axis=0, test_stride=3, seed=2)
    t1, label, _ = load_mni152()
    slices = [brain_slices(*augmented_case(t1, label, np.random.default_rng([2, v])), 0) for v in range(3)]
    training = sorted((dataset / "imagesTr").glob("*_0000.nii.gz"))
    held_out = sorted((dataset / "labelsTs").glob("*.nii.gz"))
    assert len(training) == len(slices[0]) and len(held_out) == len(slices[1][::3])
    described = json.loads((dataset / "dataset.json").read_text())
    assert described["numTraining"] == len(slices[0])
    assert described["nnugen_mni_slices"] == {"seed": 2, "volumes": 2, "axis": 0, "stride": 3}
    # a 2D case: one slice, (1, Y, X); the held-out ones are every third slice of the next volume
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(training[4]))), slices[0][4][0])
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(held_out[1]))), slices[1][3][1])
    assert held_out[1].name == "S_0103.nii.gz"
    # unseen: every third slice of the volumes after the dataset's, across volumes until there are enough
    need = len(slices[2][::3]) + 1
    written = write_unseen_mni_images(dataset, tmp_path / "unseen", need)
    assert [p.name for p in written] == [f"unseen_{k:03d}_0000.nii.gz" for k in range(need)]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(written[2]))), slices[2][6][0])
    fourth = brain_slices(*augmented_case(t1, label, np.random.default_rng([2, 3])), 0)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(written[-1]))), fourth[0][0])
    with pytest.raises(ValueError, match="test_stride >= 1"):
        write_mni_slice_dataset(tmp_path, 8, "T", train_volumes=1, test_volumes=1, test_stride=0)
