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


# ---- checked writes: a failed or silent-failing write raises one line naming the file and leaves nothing ----------

def _assert_nothing_left(folder: Path) -> None:
    assert [p.name for p in folder.iterdir()] == []


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing(tmp_path):
    import errno

    from nnugen.atomic_files import WriteError

    target = tmp_path / "case_000.npz"
    with pytest.raises(WriteError) as raised:
        with atomic_path(target):
            raise OSError(errno.ENOSPC, "No space left on device")
    message = str(raised.value)
    assert "\n" not in message and str(target) in message and "disk is full" in message
    assert raised.value.errno == errno.ENOSPC and isinstance(raised.value, OSError)
    _assert_nothing_left(tmp_path)
    # an export worker (-nps) sends it back pickled: it must arrive as the same one line
    import pickle

    assert str(pickle.loads(pickle.dumps(raised.value))) == message


def test_a_writer_that_fails_silently_is_caught_by_the_check(tmp_path):
    """What SimpleITK's NIfTI writer does on ENOSPC: no error, a 0-byte file. It must not get the final name."""
    from nnugen.atomic_files import WriteError

    target = tmp_path / "case_000.nii.gz"
    with pytest.raises(WriteError, match=r"could not write .*case_000\.nii\.gz: the written file is empty"):
        atomic_write_with(target, lambda temporary: None, suffix=".nii.gz")
    _assert_nothing_left(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_line_naming_the_file(tmp_path):
    from nnugen.atomic_files import WriteError

    tmp_path.chmod(0o555)
    try:
        with pytest.raises(WriteError, match=r"could not write .*plans\.json: Permission denied"):
            atomic_write_json(tmp_path / "plans.json", OLD)
    finally:
        tmp_path.chmod(0o755)
    _assert_nothing_left(tmp_path)


FILE_SIZE_LIMITED = textwrap.dedent("""
    import resource, signal, sys
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so a write past the limit fails with EFBIG, as on a full disk
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]), int(sys.argv[2])))
    from nnugen.atomic_files import atomic_write_json
    try:
        atomic_write_json(sys.argv[1], {"values": list(range(5000))})
    except OSError as error:
        print(error)
        sys.exit(3)
""")


@pytest.mark.parametrize("limit", [0, 4096])
def test_a_real_file_size_limit_fails_the_json_write_with_nothing_left(tmp_path, limit):
    target = tmp_path / "nnugenPlans.json"
    done = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMITED, str(target), str(limit)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and str(target) in lines[0] and "EFBIG" in lines[0]
    _assert_nothing_left(tmp_path)


def test_nan_in_json_is_an_error_naming_the_file_and_the_key(tmp_path):
    target = tmp_path / "nnugenPlans.json"
    atomic_write_json(target, OLD)
    before = target.read_bytes()
    bad = {"configurations": {"3d_fullres": {"nnugen": {"initial_lr": float("nan")}, "b": [1.0, float("inf")]}}}
    with pytest.raises(ValueError, match=r"nnugenPlans\.json: configurations\.3d_fullres\.nnugen\.initial_lr = nan is "
                                         "not a finite number"):
        atomic_write_json(target, bad)
    with pytest.raises(ValueError, match=r"b\[1\] = inf"):
        atomic_write_json(target, {"b": [1.0, float("inf")]})
    assert target.read_bytes() == before
    assert _others(tmp_path, target) == []


def test_check_file_sees_cut_containers(tmp_path):
    """A cut gzip stream (a .nii.gz whose header still reads), zip archive (.npz, torch.save), PNG or pickle."""
    import gzip
    import pickle

    import numpy as np

    from nnugen.atomic_files import check_file

    files = {"a.gz": gzip.compress(os.urandom(20000)), "a.pkl": pickle.dumps({"spacing": [1.0, 2.0]})}
    np.savez_compressed(tmp_path / "a.npz", probabilities=np.random.default_rng(0).random((2, 30, 30)))
    files["a.npz"] = (tmp_path / "a.npz").read_bytes()
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        check_file(tmp_path / name)
        (tmp_path / name).write_bytes(data[: len(data) - 7])
        with pytest.raises(ValueError, match="cut short"):
            check_file(tmp_path / name)
    (tmp_path / "empty").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        check_file(tmp_path / "empty")
    atomic_write_text(tmp_path / "empty.txt", "")  # text is checked by its exact length, so empty text is fine
    assert (tmp_path / "empty.txt").read_text() == ""


def _dead_pid() -> int:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    return finished.pid


def test_stale_temporaries_are_removed_and_live_ones_kept(tmp_path):
    """A killed writer's temporary goes; one of a process still writing (another part) or a foreign dotfile stays."""
    from nnugen.atomic_files import _HOST, remove_stale_temporaries

    dead = tmp_path / f".case_0000_0000.nii.gz.{_HOST}-{_dead_pid()}-0a1b2c3d.tmp.nii.gz"
    mine = tmp_path / f".case_0001.nii.gz.{_HOST}-{os.getpid()}-0a1b2c3d.tmp.nii.gz"
    old_format_old = tmp_path / ".dataset.json.12345678.tmp"
    old_format_new = tmp_path / ".plans.json.87654321.tmp"
    other_host_new = tmp_path / ".case_0002.nii.gz.ffffff-1-0a1b2c3d.tmp.nii.gz"
    foreign = tmp_path / ".gitignore"
    for path in (dead, mine, old_format_old, old_format_new, other_host_new, foreign):
        path.write_bytes(b"")
    os.utime(old_format_old, (0, 0))
    assert remove_stale_temporaries(tmp_path, tmp_path / "missing") == sorted([dead, old_format_old])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        p.name for p in (mine, old_format_new, other_host_new, foreign))


def test_a_kill_leftover_is_found_as_stale(tmp_path):
    from nnugen.atomic_files import remove_stale_temporaries

    target = tmp_path / "case_0000.nii.gz"
    writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        temporary = Path(writer.stdout.readline().strip())
        assert remove_stale_temporaries(tmp_path) == []  # its writer still runs
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        writer.stdout.close()
    assert remove_stale_temporaries(tmp_path) == [temporary]
    _assert_nothing_left(tmp_path)
