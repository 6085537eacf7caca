"""Uncertainty maps go back to the original image as nnU-Net's segmentation does: resampled from the network's
spacing, put back into the uncropped image (0 outside the crop), transposed back to the original axis order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nnugen.inference.case_export import maps_to_original_geometry, output_files

PROBABILITY_RESAMPLING = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}


def managers(transpose_forward: list[int], transpose_backward: list[int], spacing: list[float]):
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    configuration = {
        "spacing": spacing,
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": PROBABILITY_RESAMPLING,
        "architecture": {"network_class_name": "unused", "arch_kwargs": {}, "_kw_requires_import": []},
    }
    plans = PlansManager({"transpose_forward": transpose_forward, "transpose_backward": transpose_backward,
                          "configurations": {"3d_fullres": configuration}})
    return plans, plans.get_configuration("3d_fullres")


@pytest.mark.parametrize(("forward", "backward"), [([0, 1, 2], [0, 1, 2]), ([2, 0, 1], [1, 2, 0])])
def test_maps_are_resampled_uncropped_and_transposed_back(forward, backward):
    original_shape, original_spacing = (6, 8, 10), [2.0, 1.0, 1.0]  # in the image's own axis order
    transposed_shape = [original_shape[i] for i in forward]
    bbox = [[1, transposed_shape[0] - 1], [2, transposed_shape[1]], [0, transposed_shape[2] - 3]]
    cropped = [hi - lo for lo, hi in bbox]
    transposed_spacing = [original_spacing[i] for i in forward]
    network_grid = [round(n * s) for n, s in zip(cropped, transposed_spacing)]  # the plan's spacing is 1 mm
    properties = {"spacing": original_spacing, "shape_before_cropping": transposed_shape,
                  "bbox_used_for_cropping": bbox, "shape_after_cropping_and_before_resampling": cropped}
    maps = np.stack([np.full(network_grid, 0.5, np.float32), np.full(network_grid, 0.1, np.float32)])
    plans, configuration = managers(forward, backward, [1.0, 1.0, 1.0])

    result = maps_to_original_geometry(maps, properties, plans, configuration)

    assert result.shape == (2, *original_shape) and result.dtype == np.float32
    inside = np.zeros(transposed_shape, bool)
    inside[tuple(slice(lo, hi) for lo, hi in bbox)] = True
    inside = inside.transpose(backward)
    np.testing.assert_allclose(result[0][inside], 0.5, rtol=1e-6)
    np.testing.assert_allclose(result[1][inside], 0.1, rtol=1e-6)
    assert (result[:, ~inside] == 0).all()


def test_output_files_of_a_case():
    names = [p.name for p in output_files(Path("out/case_1"), ".nii.gz", save_probabilities=True,
                                          save_uncertainty=True)]
    assert names == ["case_1.nii.gz", "case_1.npz", "case_1.pkl", "case_1_entropy.nii.gz", "case_1_variance.nii.gz"]
    assert [p.name for p in output_files(Path("out/c"), ".mha", False, False)] == ["c.mha"]
