"""Writing one case's outputs, each file atomically (``nnugen.atomic_files``): a kill mid-write leaves the previous
file or none, never half of one, so ``--continue_prediction`` can trust every file it finds.

Segmentations go through nnU-Net's own reader-writer (as ``nnUNetv2_predict`` writes them); float maps are written
with SimpleITK in the geometry SimpleITKIO read (``properties["sitk_stuff"]``: spacing, origin, direction)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnugen.atomic_files import atomic_path


def write_segmentation(reader_writer, segmentation: np.ndarray, path: Path, properties: dict,
                       file_ending: str) -> None:
    """``reader_writer.write_seg`` to a temporary file with the same ending, renamed over ``path``."""
    with atomic_path(path, suffix=file_ending) as temporary:
        reader_writer.write_seg(segmentation, str(temporary), properties)


def write_float_map(array: np.ndarray, path: Path, properties: dict, file_ending: str) -> None:
    """A float32 image in the original geometry. ``array`` has nnU-Net's segmentation layout: (z, y, x), or (1, y, x)
    for a 2D image, which is written as a 2D file like SimpleITKIO's ``write_seg`` does."""
    import SimpleITK as sitk

    geometry = properties.get("sitk_stuff")
    if geometry is None:
        raise ValueError(f"cannot write {Path(path).name}: the image was not read with SimpleITKIO, so its spacing, "
                         "origin and direction are unknown; --save-uncertainty needs a SimpleITK dataset")
    if len(geometry["spacing"]) == 2:
        array = array[0]
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing(geometry["spacing"])
    image.SetOrigin(geometry["origin"])
    image.SetDirection(geometry["direction"])
    with atomic_path(path, suffix=file_ending) as temporary:
        sitk.WriteImage(image, str(temporary), True)


def write_probabilities(probabilities: np.ndarray, properties: dict, output_truncated: Path) -> None:
    """What ``nnUNetv2_predict --save_probabilities`` writes: ``CASE.npz`` (key ``probabilities``) and ``CASE.pkl``."""
    from batchgenerators.utilities.file_and_folder_operations import save_pickle

    output_truncated = Path(output_truncated)
    with atomic_path(output_truncated.with_name(output_truncated.name + ".npz"), suffix=".npz") as temporary:
        np.savez_compressed(temporary, probabilities=probabilities)
    with atomic_path(output_truncated.with_name(output_truncated.name + ".pkl")) as temporary:
        save_pickle(properties, str(temporary))
