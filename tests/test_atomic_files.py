"""Atomic writes: readers see the old file or the new one, never half of one, even after an error or kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nnugen.atomic_files import atomic_path, atomic_write_json, atomic_write_text, atomic_write_with

OLD = {"plans_name": "nnugenPlans", "configurations": {"3d_fullres": {"batch_size": 2}}}


def _others(folder: Path, target: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p != target)


def test_json_is_written_and_replaced(tmp_path):
    target = tmp_path / "nnugenPlans.json"
    atomic_write_json(target, OLD)
    assert json.loads(target.read_text(encoding="utf-8")) == OLD
    assert target.read_text(encoding="utf-8").endswith("}\n")
    new = {"configurations": {"2d": {"patch_size": [320, 256]}}, "ü": "ünïcode"}
    atomic_write_json(str(target), new)  # str paths work too
    assert json.loads(target.read_text(encoding="utf-8")) == new
    assert _others(tmp_path, target) == []


def test_text_and_custom_writer(tmp_path):
    atomic_write_text(tmp_path / "notes.txt", "line 1\nline 2\n")
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "line 1\nline 2\n"

    seen = []

    def write(path: Path) -> None:
        seen.append(path)
        path.write_bytes(b"\x00\x01image")

    atomic_write_with(tmp_path / "case_000.nii.gz", write, suffix=".nii.gz")
    assert (tmp_path / "case_000.nii.gz").read_bytes() == b"\x00\x01image"
    temporary = seen[0]
    assert temporary.parent == tmp_path  # same folder: os.replace never crosses file systems
    assert temporary.name.startswith(".case_000.nii.gz.") and temporary.name.endswith(".nii.gz")
    assert not temporary.exists()
    assert _others(tmp_path, tmp_path / "case_000.nii.gz") == ["notes.txt"]


def test_error_inside_the_block_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "nnugenPlans.json"
    atomic_write_json(target, OLD)
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_path(target) as temporary:
            temporary.write_text('{"half": ', encoding="utf-8")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == before
    assert _others(tmp_path, target) == []


def test_error_before_the_first_write_leaves_no_file(tmp_path):
    target = tmp_path / "checkpoint_final.pth"
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target):
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_unserialisable_json_keeps_the_old_file(tmp_path):
    target = tmp_path / "nnugenPlans.json"
    atomic_write_json(target, OLD)
    before = target.read_bytes()
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert target.read_bytes() == before
    assert _others(tmp_path, target) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_get_the_usual_permissions(tmp_path, umask):
    """Like ``open(path, "w")``: 0o666 less the umask (so a group can read plans and checkpoints)."""
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "atomic.json", "{}")
        (tmp_path / "plain.json").write_text("{}", encoding="utf-8")
    finally:
        os.umask(previous)
    mode = (tmp_path / "atomic.json").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.json").stat().st_mode & 0o777 == 0o666 & ~umask


SLOW_WRITER = textwrap.dedent("""
    import sys
    import time

    from nnugen.atomic_files import atomic_path

    with atomic_path(sys.argv[1]) as temporary:
        with open(temporary, "wb") as stream:
            for chunk in range(10_000):
                stream.write(b"n" * 65536)
                stream.flush()
                if chunk == 3:
                    print(temporary, flush=True)
                time.sleep(0.01)
""")


def test_kill_during_a_slow_write_leaves_the_old_file_intact(tmp_path):
    target = tmp_path / "checkpoint_latest.pth"
    atomic_write_json(target, OLD)
    before = target.read_bytes()
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        temporary = Path(writer.stdout.readline().strip())  # printed once 4 chunks (256 KiB) are on disk
        assert temporary.parent == tmp_path and temporary.stat().st_size >= 4 * 65536
        assert target.read_bytes() == before  # mid-write the target is still the old file
        os.kill(writer.pid, signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        writer.stdout.close()
    assert target.read_bytes() == before
    assert json.loads(target.read_text(encoding="utf-8")) == OLD
    leftovers = _others(tmp_path, target)
    assert len(leftovers) <= 1 and all(name.startswith(".checkpoint_latest.pth.") for name in leftovers)
    # the next write succeeds next to the stale temporary and replaces the target
    atomic_write_json(target, {"epoch": 50})
    assert json.loads(target.read_text(encoding="utf-8")) == {"epoch": 50}
