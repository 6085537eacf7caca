"""Writing one case's outputs, each file atomically and checked (``nnugen.atomic_files``): a kill mid-write leaves
the previous file or none, never half of one, and a file that does not read back (SimpleITK's NIfTI writer fails
silently on a full disk) raises a one-line ``WriteError`` instead of being renamed into place. ``output_complete`` is
the one test of "this output is done" that ``nnugen_predict --continue_prediction`` and ``nnugen_sample --continue``
share.

Segmentations go through nnU-Net's own reader-writer (as ``nnUNetv2_predict`` writes them); float maps are written
with SimpleITK in the geometry SimpleITKIO read (``properties["sitk_stuff"]``: spacing, origin, direction)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nnugen.atomic_files import atomic_path, check_file

IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".gipl", ".tif", ".tiff", ".png", ".bmp")
"""Endings whose files ``check_image`` reads back with SimpleITK (every format nnU-Net's reader-writers write)."""


def check_image(path: str | os.PathLike, voxels: int | None = None) -> None:
    """Raise ``ValueError`` unless ``path`` reads back as a whole image: ``check_file`` (not empty; a ``.nii.gz``
    decompresses to its end), the header reads (SimpleITK's ``ReadImageInformation``, no voxel data), it has
    ``voxels`` voxels when given, and an uncompressed ``.nii`` is long enough to hold them."""
    import SimpleITK as sitk

    check_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise ValueError("the written file does not read back as an image (unreadable header)") from None
    count = math.prod(reader.GetSize())
    if voxels is not None and count != voxels:
        raise ValueError(f"the written image reads back with {count} voxels, {voxels} were written")
    if str(path).endswith(".nii"):
        one = sitk.Image([1] * reader.GetDimension(), reader.GetPixelID(), reader.GetNumberOfComponents())
        needed = 348 + count * sitk.GetArrayViewFromImage(one).nbytes  # NIfTI-1 header + the voxel data
        if os.path.getsize(path) < needed:
            raise ValueError(f"the written file holds {os.path.getsize(path)} bytes, its voxels need {needed}: the "
                             "disk may be full")


def output_complete(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a finished output: it exists and reads back (``check_image`` for images, ``check_file``
    for the rest). An empty, cut or unreadable file counts as missing, so ``--continue`` writes it again."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        check_image(path) if path.name.endswith(IMAGE_ENDINGS) else check_file(path)
    except (OSError, ValueError):
        return False
    return True


def write_segmentation(reader_writer, segmentation: np.ndarray, path: Path, properties: dict,
                       file_ending: str) -> None:
    """``reader_writer.write_seg`` to a temporary file with the same ending, checked, renamed over ``path``."""
    with atomic_path(path, suffix=file_ending, check=lambda p: check_image(p, segmentation.size)) as temporary:
        _native_write(lambda: reader_writer.write_seg(segmentation, str(temporary), properties))


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
    with atomic_path(path, suffix=file_ending, check=lambda p: check_image(p, array.size)) as temporary:
        _native_write(lambda: sitk.WriteImage(image, str(temporary), True))


def _native_write(write: Callable[[], None]) -> None:
    """Run an ITK writer; its ``RuntimeError`` (a multi-line C++ trace) becomes an ``OSError`` with the last line,
    the reason (e.g. "Reason: File too large"), which ``atomic_path`` reports as the file's ``WriteError``."""
    try:
        write()
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise OSError(f"the image writer failed: {lines[-1] if lines else 'no reason given'}") from error


def write_probabilities(probabilities: np.ndarray, properties: dict, output_truncated: Path) -> None:
    """What ``nnUNetv2_predict --save_probabilities`` writes: ``CASE.npz`` (key ``probabilities``) and ``CASE.pkl``."""
    from batchgenerators.utilities.file_and_folder_operations import save_pickle

    output_truncated = Path(output_truncated)
    with atomic_path(output_truncated.with_name(output_truncated.name + ".npz"), suffix=".npz") as temporary:
        np.savez_compressed(temporary, probabilities=probabilities)
    with atomic_path(output_truncated.with_name(output_truncated.name + ".pkl")) as temporary:
        save_pickle(properties, str(temporary))
