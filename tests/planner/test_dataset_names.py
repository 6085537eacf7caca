"""Names that become paths are refused when they would leave their folder (issue 15, "paths from names"): dataset
names (``nnugen_plan -d``, every lookup through ``dataset_name``) and case identifiers of an input folder."""

from __future__ import annotations

import shutil

import pytest
from nnugen.entrypoints.plan import main as plan_main

from nnugen.folders.dataset_folders import InputError, check_path_name, dataset_name, preprocessed_folder
from nnugen.inference.input_cases import find_cases


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../Dataset001_X", "a\\b", "/abs", "a\0b"])
def test_names_that_leave_their_folder_are_refused(name):
    with pytest.raises(InputError, match="is not a plain file name"):
        check_path_name(name, "dataset name")


@pytest.mark.parametrize("name", ["Dataset004_Hippocampus", "case_0001", "sub-01_ses-02", "a..b"])
def test_plain_names_pass(name):
    assert check_path_name(name, "case identifier") == name


@pytest.mark.parametrize("dataset", ["Dataset901_Fake/../../outside/Dataset902_Other", "Dataset901_../x",
                                     "Dataset901_/abs"])
def test_dataset_names_with_separators_are_refused(fake_preprocessed, dataset):
    fake_preprocessed()
    with pytest.raises(InputError, match="dataset name .* is not a plain file name"):
        dataset_name(dataset)
    with pytest.raises(InputError, match="not a plain file name"):
        preprocessed_folder(dataset)


def test_nnugen_plan_refuses_a_dataset_name_that_leaves_nnunet_preprocessed(fake_preprocessed, tmp_path, capsys):
    inside = fake_preprocessed()
    outside = tmp_path / "outside" / "Dataset902_Other"
    shutil.copytree(inside, outside)
    dataset = "Dataset901_Fake/../../outside/Dataset902_Other"  # resolves to `outside`, which exists
    assert plan_main(["-d", dataset, "-c", "3d"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("nnugen_plan: error: dataset name") and "not a plain file name" in line
    assert not (outside / "nnugenPlans.json").exists() and not (inside / "nnugenPlans.json").exists()


def test_case_identifiers_with_a_separator_are_refused(tmp_path):
    (tmp_path / "a\\b_0000.nii.gz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"case identifier of a.b_0000.nii.gz .* is not a plain file name"):
        find_cases(tmp_path, ".nii.gz", {"0": "T1"})
