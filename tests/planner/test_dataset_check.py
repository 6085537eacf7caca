"""The dataset check finds what nnU-Net's integrity check cannot: NaN / Inf voxels, cut-off and corrupt files."""

import gzip
import struct

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from nnugen.demo.phantom import PhantomSpec, write_phantom_dataset
from nnugen.folders.dataset_folders import InputError
from nnugen_planner.dataset_check import DatasetProblem, check_image_file, check_raw_dataset


def _volume(shape=(20, 24, 28)) -> np.ndarray:
    return np.random.default_rng(0).uniform(100, 900, shape).astype(np.float32)


def _save(array: np.ndarray, path) -> str:
    nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.8, 2.0, 1.0])), str(path))
    return str(path)


def test_clean_files_have_no_problems(tmp_path):
    assert check_image_file(_save(_volume(), tmp_path / "a.nii.gz")) == []
    assert check_image_file(_save(_volume(), tmp_path / "a.nii")) == []
    assert check_image_file(_save(np.zeros((3, 4, 5), np.uint8), tmp_path / "tiny_label.nii.gz")) == []
    nib.save(nib.Nifti2Image(_volume().astype(">f8"), np.eye(4)), str(tmp_path / "big_endian_nifti2.nii.gz"))
    assert check_image_file(tmp_path / "big_endian_nifti2.nii.gz") == []
    image_2d = sitk.GetImageFromArray(_volume()[0])
    sitk.WriteImage(image_2d, str(tmp_path / "slice.nii.gz"))
    sitk.WriteImage(image_2d, str(tmp_path / "slice.mha"))
    assert check_image_file(tmp_path / "slice.nii.gz") == [] and check_image_file(tmp_path / "slice.mha") == []


def test_nan_voxels_are_found_although_simpleitk_reads_them_as_zero(tmp_path):
    volume = _volume()
    volume[3, 4, 5] = volume[10, 11, 12] = np.nan
    path = _save(volume, tmp_path / "nan.nii.gz")
    # The reason for this check: nnU-Net's reader sees zeros, so its integrity check passes this file.
    read_back = sitk.GetArrayFromImage(sitk.ReadImage(path))  # SimpleITK's axes are reversed
    assert read_back[5, 4, 3] == 0 and np.isfinite(read_back).all()
    problems = check_image_file(path)
    assert len(problems) == 1 and problems[0].path.name == "nan.nii.gz"
    assert "2 NaN voxel(s)" in problems[0].problem and "replace them" in problems[0].problem


@pytest.mark.parametrize("name", ["inf.nii.gz", "inf.nii"])
def test_infinite_voxels_are_found(tmp_path, name):
    volume = _volume()
    volume[0, 0, 0], volume[1, 1, 1] = np.inf, -np.inf
    (problem,) = check_image_file(_save(volume, tmp_path / name))
    assert "1 +Inf, 1 -Inf voxel(s)" in problem.problem


def test_nan_in_a_format_read_by_simpleitk(tmp_path):
    volume = _volume()
    volume[2, 2, 2] = np.nan
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(tmp_path / "nan.mha"))
    (problem,) = check_image_file(tmp_path / "nan.mha")
    assert "1 NaN" in problem.problem


def test_truncated_gzip_is_caught_and_named(tmp_path):
    path = _save(_volume(), tmp_path / "case_001_0000.nii.gz")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    sitk.ReadImage(path)  # the reason for this check: SimpleITK reads the cut-off file without an error
    (problem,) = check_image_file(path)
    assert isinstance(problem, DatasetProblem)
    assert "case_001_0000.nii.gz" in str(problem)
    assert problem.problem.startswith("truncated gzip stream: file is cut off (expected 53760 bytes of voxel data")
    assert problem.problem.endswith("re-export or re-copy it") and "\n" not in problem.problem


def test_truncated_plain_nifti_and_missing_gzip_trailer(tmp_path):
    path = tmp_path / "cut.nii"
    _save(_volume(), path)
    path.write_bytes(path.read_bytes()[:1352])
    (problem,) = check_image_file(path)
    assert "expected 53760 bytes of voxel data, found 1000" in problem.problem
    path = tmp_path / "no_trailer.nii.gz"
    _save(_volume(), path)
    path.write_bytes(path.read_bytes()[:-4])
    (problem,) = check_image_file(path)
    assert "after the voxel data" in problem.problem


def test_corrupt_and_garbage_files(tmp_path):
    path = _save(_volume(), tmp_path / "crc.nii.gz")
    data = bytearray(open(path, "rb").read())
    data[-6] ^= 0xFF  # inside the CRC32 of the gzip trailer
    open(path, "wb").write(bytes(data))
    (tmp_path / "garbage.nii.gz").write_bytes(b"this is not an image" * 50)
    (tmp_path / "gzipped_garbage.nii.gz").write_bytes(gzip.compress(b"this is not an image" * 50))
    (tmp_path / "garbage.mha").write_bytes(b"this is not an image" * 50)
    expected = {"crc.nii.gz": "corrupt gzip stream", "garbage.nii.gz": "not a gzip file",
                "gzipped_garbage.nii.gz": "not a NIfTI file", "garbage.mha": "SimpleITK cannot read it",
                "missing.nii.gz": "cannot be opened"}
    for name, start in expected.items():
        (problem,) = check_image_file(tmp_path / name)
        assert problem.problem.startswith(start), problem


def test_scaling_that_readers_disagree_on(tmp_path):
    path = _save(_volume(), tmp_path / "scaled.nii")
    data = bytearray(open(path, "rb").read())
    offset = nib.nifti1.header_dtype.fields["scl_slope"][1]
    data[offset:offset + 8] = struct.pack("<ff", np.nan, 5.0)  # slope NaN, intercept 5
    open(path, "wb").write(bytes(data))
    (problem,) = check_image_file(path)
    assert "scl_slope" in problem.problem
    data[offset:offset + 8] = struct.pack("<ff", np.nan, np.nan)  # both unset: every reader skips the scaling
    open(path, "wb").write(bytes(data))
    assert check_image_file(path) == []


@pytest.mark.parametrize("num_processes", [1, 2])
def test_raw_dataset_with_one_corrupted_file(tmp_path, num_processes):
    spec = PhantomSpec(shape=(16, 24, 24), n_channels=2)
    folder = write_phantom_dataset(tmp_path, 9, "Phantom", n_train=3, n_test=1, spec=spec)  # 12 files
    assert check_raw_dataset(folder, num_processes) == []
    broken = folder / "imagesTr" / "Phantom_002_0001.nii.gz"
    broken.write_bytes(broken.read_bytes()[:300])
    problems = check_raw_dataset(folder, num_processes)
    assert [p.path for p in problems] == [broken] and "truncated" in problems[0].problem


def test_raw_dataset_without_dataset_json(tmp_path):
    with pytest.raises(InputError, match="dataset.json"):
        check_raw_dataset(tmp_path)
