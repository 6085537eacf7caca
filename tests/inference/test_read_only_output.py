"""A read-only output folder (issue 15): every writer nnugen_predict and nnugen_sample use fails with one line naming
the file and EROFS, and nothing is left. The folder is a real read-only filesystem (a tmpfs mounted ``ro``: root
ignores file permissions, so a chmod would prove nothing); skipped where mounting is not permitted. The CLIs on a
trained model into a read-only folder: benchmarks/fault_table.py (docs/reliability.md)."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from nnugen.atomic_files import WriteError, atomic_torch_save, atomic_write_json, atomic_write_text
from nnugen.inference.image_writing import write_float_map, write_segmentation

GEOMETRY = {"sitk_stuff": {"spacing": (1.0, 1.0, 2.0), "origin": (0.0, 0.0, 0.0),
                           "direction": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)}}


@pytest.fixture()
def read_only(tmp_path) -> Path:
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here ({mounted.stderr.decode().strip()[:80]})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _segmentation(path: Path) -> None:
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    write_segmentation(SimpleITKIO(), np.zeros((4, 5, 6), dtype=np.uint8), path, GEOMETRY, ".nii.gz")


WRITERS = {
    "sampling.json": lambda path: atomic_write_json(path, {"seed": 0}),
    "notes.txt": lambda path: atomic_write_text(path, "x"),
    "weights.pt": lambda path: atomic_torch_save({"w": torch.zeros(2)}, path),
    "case.nii.gz": _segmentation,
    "case_entropy.nii.gz": lambda path: write_float_map(np.zeros((4, 5, 6), np.float32), path, GEOMETRY, ".nii.gz"),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_every_writer_refuses_a_read_only_folder_in_one_line(read_only, name):
    target = read_only / name
    with pytest.raises(WriteError) as error:
        WRITERS[name](target)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"could not write {target}: Read-only file system"), message
    assert error.value.errno == errno.EROFS
    assert list(read_only.iterdir()) == []
