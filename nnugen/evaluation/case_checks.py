"""Checks every evaluation runs on a pair of images before it measures anything: the same grid (spacing, origin,
direction, as nnU-Net's reader reports them), and files without NaN / Inf voxels that are not cut off. Each failure is
a one-line ValueError naming the case and what to do."""

from __future__ import annotations

from pathlib import Path

import numpy as np

GEOMETRY_TOLERANCE = 1e-4
"""Relative and absolute tolerance when comparing spacing, origin and direction (nnU-Net's dataset check uses
``np.allclose`` too)."""


def check_same_geometry(reference_properties: dict, prediction_properties: dict, case: str,
                        what: str = "prediction") -> None:
    """ValueError naming ``case`` when spacing, origin or direction (nnU-Net reader properties) differ."""
    checks = [("spacing", reference_properties.get("spacing"), prediction_properties.get("spacing"))]
    reference_itk, prediction_itk = reference_properties.get("sitk_stuff"), prediction_properties.get("sitk_stuff")
    if reference_itk and prediction_itk:
        checks += [(key, reference_itk[key], prediction_itk[key]) for key in ("origin", "direction")]
    for key, expected, found in checks:
        if expected is None or found is None:
            continue
        if np.shape(expected) != np.shape(found) or not np.allclose(expected, found, rtol=GEOMETRY_TOLERANCE,
                                                                    atol=GEOMETRY_TOLERANCE):
            raise ValueError(f"{case}: the {what}'s {key} {tuple(np.round(found, 6))} differs from the "
                             f"reference's {tuple(np.round(expected, 6))}; resample the {what} onto the "
                             "reference's grid")


def check_image_files(paths, what: str) -> None:
    """ValueError naming ``what`` and the file when one of ``paths`` holds NaN / Inf voxels or is cut off or corrupt
    (nnugen.folders.image_check: SimpleITK reads NaN voxels of NIfTI files as 0, so the arrays cannot tell)."""
    from nnugen.folders.image_check import check_image_file

    for path in paths:
        problems = check_image_file(Path(path))
        if problems:
            raise ValueError(f"{what} {Path(path).name}: {problems[0].problem}")
