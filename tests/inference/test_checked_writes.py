"""Every image nnugen writes is read back before it gets its final name, and ``--continue`` counts an output as done
only when it reads back. The full disk is real: the writer runs in a subprocess under a file size limit
(``RLIMIT_FSIZE`` with SIGXFSZ ignored, so writes fail with EFBIG as they fail with ENOSPC on a full disk), where
SimpleITK's NIfTI writer reports nothing and leaves a 0-byte or cut file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from nnugen.inference.image_writing import output_complete, write_float_map, write_segmentation

GEOMETRY = {"sitk_stuff": {"spacing": (1.0, 1.0, 2.0), "origin": (0.0, 0.0, 0.0),
                           "direction": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)}}

LIMITED_WRITE = textwrap.dedent("""
    import resource, signal, sys
    import numpy as np
    from nnugen.inference.image_writing import write_float_map, write_segmentation
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    path, limit, kind, ending = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    geometry = {"sitk_stuff": {"spacing": (1.0, 1.0, 2.0), "origin": (0.0, 0.0, 0.0),
                               "direction": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)}}
    volume = np.random.default_rng(0).random((24, 32, 32))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    try:
        if kind == "map":
            write_float_map(volume.astype(np.float32), path, geometry, ending)
        else:
            write_segmentation(SimpleITKIO(), (volume * 3).astype(np.uint8), path, geometry, ending)
    except OSError as error:
        print(error)
        sys.exit(3)
""")


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".nrrd", ".mha"])
@pytest.mark.parametrize("kind", ["map", "segmentation"])
@pytest.mark.parametrize("limit", [0, 3000])
def test_a_full_disk_fails_the_image_write_with_one_line_and_nothing_left(tmp_path, ending, kind, limit):
    """0: nothing reaches the disk (a 0-byte file); 3000 bytes: the header reads, the voxels are cut."""
    target = tmp_path / f"case_000{ending}"
    done = subprocess.run([sys.executable, "-c", LIMITED_WRITE, str(target), str(limit), kind, ending],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, (done.stdout, done.stderr)
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"could not write {target}: "), lines
    assert list(tmp_path.iterdir()) == []  # nothing under the final name, no temporary


def _image(tmp_path: Path, name: str = "case.nii.gz") -> Path:
    path = tmp_path / name
    write_float_map(np.random.default_rng(0).random((6, 7, 8)).astype(np.float32), path, GEOMETRY, ".nii.gz")
    return path


def test_written_images_read_back(tmp_path):
    import SimpleITK as sitk
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    volume = np.random.default_rng(0).random((6, 7, 8)).astype(np.float32)
    write_float_map(volume, tmp_path / "map.nii.gz", GEOMETRY, ".nii.gz")
    write_segmentation(SimpleITKIO(), (volume > 0.5).astype(np.uint8), tmp_path / "seg.nii", GEOMETRY, ".nii")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "map.nii.gz"))), volume)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.nii.gz", "seg.nii"]
    assert output_complete(tmp_path / "map.nii.gz") and output_complete(tmp_path / "seg.nii")


def test_an_output_is_complete_only_when_it_reads_back(tmp_path):
    """What ``--continue_prediction`` and ``--continue`` ask of every file: 0-byte, cut or garbage files are redone."""
    good = _image(tmp_path)
    data = good.read_bytes()
    assert output_complete(good)
    assert not output_complete(tmp_path / "missing.nii.gz")
    broken = {"empty.nii.gz": b"", "cut.nii.gz": data[: len(data) // 2], "header_only.nii.gz": data[:400],
              "garbage.nii.gz": b"not an image at all", "empty.npz": b"", "cut.png": b"\x89PNG\r\n\x1a\n"}
    for name, content in broken.items():
        (tmp_path / name).write_bytes(content)
        assert not output_complete(tmp_path / name), name
    np.savez_compressed(tmp_path / "case.npz", probabilities=np.zeros((2, 3, 3)))
    assert output_complete(tmp_path / "case.npz")


def test_the_continue_of_prediction_redoes_a_zero_byte_output(tmp_path):
    """nnugen_predict's ``--continue_prediction`` test: a case is done when all its files read back."""
    from nnugen.inference.case_export import output_files

    files = output_files(tmp_path / "case_1", ".nii.gz", save_probabilities=False, save_uncertainty=True)
    for path in files:
        _image(tmp_path, path.name)
    assert all(output_complete(path) for path in files)
    files[0].write_bytes(b"")  # what an older nnugen left under the final name on a full disk
    assert not all(output_complete(path) for path in files)


def _sample_writer(folder: Path, as_dataset: str | None = None):
    from nnugen.inference.sample_writing import ReferenceGeometry, SampleGeometry, SampleWriter

    reference = ReferenceGeometry((0.0,) * 3, tuple(np.eye(3).flatten().tolist()), 3, "test")
    geometry = SampleGeometry((4, 5, 6), (1.0, 1.0, 1.0), (0, 1, 2), (0, 1, 2), reference)
    return SampleWriter(folder, {"file_ending": ".nii.gz"}, geometry, None, as_dataset)


def test_the_continue_of_sampling_redoes_a_zero_byte_image(tmp_path):
    import imageio.v3 as iio

    writer = _sample_writer(tmp_path)
    (tmp_path / "previews").mkdir()
    writer.geometry.write_image(np.zeros((4, 5, 6), np.float32), tmp_path / "case_0000_0000.nii.gz", ".nii.gz")
    frame = np.zeros((8, 8), np.uint8)
    iio.imwrite(tmp_path / "previews" / "case_0000.png", frame)
    iio.imwrite(tmp_path / "previews" / "case_0000.gif", np.stack([frame, frame]), extension=".gif")
    assert writer.case_complete("case_0000", image_channels=1)
    (tmp_path / "case_0000_0000.nii.gz").write_bytes(b"")
    assert not writer.case_complete("case_0000", image_channels=1)


def test_the_sample_writer_removes_stale_temporaries_in_all_its_folders(tmp_path):
    """A ``kill -9`` during ``nnugen_sample --as-dataset`` leaves a 0-byte temporary in imagesTr, on which nnU-Net's
    ``verify_dataset_integrity`` fails; the next run removes it (and those in labelsTr, previews and the folder)."""
    writer = _sample_writer(tmp_path, "Dataset950_Synth")
    dataset = tmp_path / "Dataset950_Synth"
    stale = [dataset / "imagesTr" / ".case_0000_0000.nii.gz.12345678.tmp.nii.gz",
             dataset / "labelsTr" / ".case_0000.nii.gz.12345678.tmp.nii.gz",
             dataset / ".dataset.json.12345678.tmp", tmp_path / "previews" / ".case_0000.png.12345678.tmp.png",
             tmp_path / ".sampling.json.12345678.tmp"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        os.utime(path, (0, 0))  # an older nnugen's name carries no process: stale once an hour old
    (dataset / "imagesTr" / "case_0001_0000.nii.gz").write_bytes(b"kept")
    assert sorted(writer.remove_stale_temporaries()) == sorted(stale)
    assert [p.name for p in dataset.rglob(".*")] == []
    assert (dataset / "imagesTr" / "case_0001_0000.nii.gz").read_bytes() == b"kept"
