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
