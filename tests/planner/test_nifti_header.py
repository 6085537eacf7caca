"""The header steps of nnugen_check's NIfTI reader (nnugen_planner/dataset_check.py): the header size and the voxel
scaling as SimpleITK applies it."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from nnugen_planner.dataset_check import _nifti_header, _scaling


@pytest.mark.parametrize(("slope", "inter", "expected"), [
    (1.0, 0.0, (1.0, 0.0)),
    (2.0, -1.0, (2.0, -1.0)),
    (math.nan, 0.0, (1.0, 0.0)),  # nibabel and SimpleITK both leave the values unscaled
    (0.0, 5.0, (1.0, 5.0)),
])
def test_usable_scalings_have_no_problem(slope, inter, expected):
    assert _scaling({"scl_slope": slope, "scl_inter": inter}) == ([], *expected)


@pytest.mark.parametrize(("slope", "inter", "expected"), [(math.nan, 3.0, (1.0, 3.0)), (2.0, math.inf, (2.0, 0.0))])
def test_scalings_the_readers_disagree_on_are_reported_and_applied_as_simpleitk_does(slope, inter, expected):
    problems, *scaling = _scaling({"scl_slope": slope, "scl_inter": inter})
    assert len(problems) == 1 and "read differently by SimpleITK and nibabel" in problems[0]
    assert tuple(scaling) == expected


def test_a_nifti1_header_is_parsed_and_short_or_foreign_blocks_are_told_apart():
    header = nib.Nifti1Header()
    header.set_data_shape((4, 5, 6))
    header.set_data_dtype(np.float32)
    header["magic"] = b"n+1"
    parsed, size, dtype, n_voxels = _nifti_header(header.binaryblock + b"\0" * 4)
    assert (size, dtype, n_voxels) == (348, np.dtype("<f4"), 120)
    with pytest.raises(EOFError):
        _nifti_header(header.binaryblock[:100])
    assert _nifti_header(b"GIF89a" + b"\0" * 600).startswith("not a NIfTI file")
