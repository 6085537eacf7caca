"""Atomic, checked writes: a temporary file in the same folder, flushed and fsynced, checked, then ``os.replace``d
over the target. Readers see the old file or the new one, never half of one, even after ``kill -9`` mid-write; the
previous file stays valid until the swap. Every file nnugen writes goes through here. Torch-free (torch is imported
lazily).

Checked: a writer that fails quietly (SimpleITK's NIfTI writer ignores ENOSPC and EFBIG and leaves a 0-byte or cut
file) must not get its file renamed into place, so the temporary is read back before the rename (``check_file``: not
empty, and a gzip stream, zip archive, PNG, GIF or pickle whole to its end marker; image writers add a header read,
``nnugen.inference.image_writing.check_image``). Any failure raises ``WriteError``, one line naming the final file and
the cause, and leaves nothing under the final name or the temporary one.

Temporaries are named ``.NAME.HOST-PID-RANDOM.tmpSUFFIX`` (``TEMPORARY_NAME``), so a command can find the ones a
killed run left and remove them before it writes (``remove_stale_temporaries``) without touching those of a part
still writing into the same folder."""

from __future__ import annotations

import contextlib
import errno as errno_codes
import glob
import gzip
import hashlib
import json
import math
import os
import re
import secrets
import socket
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.(?:(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-)?[0-9a-f]{8}\.tmp")
"""A temporary of ``atomic_path``: ``.NAME.HOST-PID-RANDOM.tmpSUFFIX`` (older nnugen: ``.NAME.RANDOM.tmpSUFFIX``)."""
STALE_AFTER_S = 3600.0
"""A temporary not modified for this long is stale whoever wrote it (writers touch theirs until they rename it)."""
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
_DISK_FULL = {errno_codes.ENOSPC: "the disk is full (ENOSPC)",
              errno_codes.EFBIG: "file too large (EFBIG: a file size limit, ulimit -f, or the file system's limit)",
              errno_codes.EDQUOT: "the disk quota is exceeded (EDQUOT)"}


class WriteError(OSError):
    """A write that failed or did not read back; its message is one line naming the final file and the cause."""


def write_error(path: str | os.PathLike, cause: BaseException | str) -> WriteError:
    """``WriteError("could not write PATH: CAUSE; nothing was written under that name")``, keeping the errno."""
    if isinstance(cause, OSError) and cause.errno in _DISK_FULL:
        reason = _DISK_FULL[cause.errno]
    elif isinstance(cause, OSError) and cause.strerror:
        reason = f"{cause.strerror} (errno {cause.errno})"
    else:
        reason = " ".join(str(cause).split()) or type(cause).__name__
    error = WriteError(f"could not write {path}: {reason}; nothing was written under that name")
    error.errno = getattr(cause, "errno", None)
    return error


def check_file(path: str | os.PathLike) -> None:
    """Raise ``ValueError`` unless ``path`` holds a whole file: not empty, and a gzip stream, zip archive (``.npz``,
    ``torch.save``), PNG, GIF or pickle complete to its end marker. Cheap except for gzip, which is decompressed once
    (the only way to see a cut ``.nii.gz``, whose header still reads)."""
    size = os.path.getsize(path)
    if size == 0:
        raise ValueError("the written file is empty (0 bytes): the disk may be full")
    with open(path, "rb") as stream:
        head = stream.read(4)
        stream.seek(-min(size, 12), os.SEEK_END)
        tail = stream.read()
    cut = "the written file is cut short ({}): the disk may be full"
    if head[:2] == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as decompressed:
                while decompressed.read(1 << 22):
                    pass
        except (EOFError, OSError, zlib.error) as error:
            raise ValueError(cut.format(f"gzip stream: {error}")) from None
    elif head == b"PK\x03\x04":
        try:
            zipfile.ZipFile(path).close()  # reads the central directory, which a zip writer writes last
        except (zipfile.BadZipFile, OSError) as error:
            raise ValueError(cut.format(f"zip archive: {error}")) from None
    elif head == b"\x89PNG" and not tail.endswith(b"IEND\xaeB`\x82"):
        raise ValueError(cut.format("no PNG end chunk"))
    elif head[:3] == b"GIF" and not tail.endswith(b";"):
        raise ValueError(cut.format("no GIF trailer"))
    elif head[:1] == b"\x80" and str(path).endswith(".pkl") and not tail.endswith(b"."):
        raise ValueError(cut.format("no pickle STOP"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "",
                check: Callable[[Path], None] = check_file) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` to write to; on success it is fsynced, ``check``ed (raises
    ``ValueError`` or ``OSError`` if the file is not whole) and replaces ``path``; on any error it vanishes, and
    ``OSError``s (ENOSPC, EFBIG, EACCES, a failed check) become a one-line ``WriteError`` naming ``path``.
    ``suffix`` keeps the ending for writers that pick the format from it (SimpleITK: ``.nii.gz``)."""
    path = Path(path)
    try:
        temporary = _new_temporary_file(path, suffix)
    except OSError as error:
        raise write_error(path, error) from error
    try:
        try:
            yield Path(temporary)
        except WriteError:
            raise
        except OSError as error:
            raise write_error(path, error) from error
        try:
            with open(temporary, "rb") as stream:
                os.fsync(stream.fileno())
            check(Path(temporary))
            os.replace(temporary, path)
        except (OSError, ValueError) as error:
            raise write_error(path, error) from error
        _fsync_folder(path.parent)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def torn_writes(path: str | os.PathLike) -> list[Path]:
    """The temporaries that writes of ``path`` killed mid-way (``kill -9``, power loss) left next to it."""
    path = Path(path)
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp*"))


def stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """The temporaries in ``folder`` whose writer is gone: written by a process of this machine that no longer runs,
    or not modified for ``STALE_AFTER_S`` (a writer on another machine, or an older nnugen). Not recursive."""
    folder, found = Path(folder), []
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):
        for entry in folder.iterdir():
            match = TEMPORARY_NAME.match(entry.name)
            if match is None or not entry.is_file():
                continue
            gone = match["host"] == _HOST and int(match["pid"]) != os.getpid() and not _running(int(match["pid"]))
            with contextlib.suppress(FileNotFoundError):
                if gone or time.time() - entry.stat().st_mtime > STALE_AFTER_S:
                    found.append(entry)
    return sorted(found)


def remove_stale_temporaries(*folders: str | os.PathLike) -> list[Path]:
    """Delete ``stale_temporaries`` of each folder (what a killed run left); returns them. Every nnugen command that
    writes into a folder calls this first, so a torn file never outlives a ``--continue``."""
    removed = []
    for folder in folders:
        for path in stale_temporaries(folder):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _new_temporary_file(path: Path, suffix: str) -> str:
    """An empty ``.NAME.HOST-PID-RANDOM.tmpSUFFIX`` next to ``path`` with the mode ``open(path, "w")`` would give
    (0o666 less the umask); ``tempfile.mkstemp`` makes it 0o600, which would hide plans and checkpoints from the
    user's group."""
    for _ in range(100):
        temporary = path.parent / f".{path.name}.{_HOST}-{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}"
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return str(temporary)
    raise FileExistsError(f"no free temporary name next to {path}")


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 text; the check is that the file holds exactly the bytes written (it may be empty)."""
    data = text.encode("utf-8")

    def whole(temporary: Path) -> None:
        if temporary.stat().st_size != len(data):
            raise ValueError(f"short write: {temporary.stat().st_size} of {len(data)} bytes on disk")

    with atomic_path(path, check=whole) as temporary:
        temporary.write_bytes(data)


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    """Standard JSON (``allow_nan=False``): a NaN or Infinity is a ``ValueError`` naming the file and the key."""
    try:
        text = json.dumps(data, indent=4, sort_keys=False, allow_nan=False)
    except ValueError:
        where = _non_finite(data) or "a value"
        raise ValueError(f"{path}: {where} is not a finite number; JSON holds only finite numbers, so nothing was "
                         "written (check the setting or result that produced it)") from None
    atomic_write_text(path, text + "\n")


def _non_finite(data: Any, where: str = "") -> str | None:
    """The key path (``a.b[2]``) of the first NaN or Infinity in ``data`` and its value, or None."""
    if isinstance(data, float) and not math.isfinite(data):
        return f"{where or 'the value'} = {data}"
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, (list, tuple)) else ()
    for key, value in items:
        found = _non_finite(value, f"{where}[{key}]" if isinstance(key, int) else f"{where}.{key}".lstrip("."))
        if found:
            return found
    return None


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], None], suffix: str = "",
                      check: Callable[[Path], None] = check_file) -> None:
    """Atomic, checked version of any ``write(path)`` function, e.g. ``lambda p: torch.save(obj, p)``."""
    with atomic_path(path, suffix, check) as temporary:
        write(temporary)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    atomic_write_with(path, lambda temporary: torch.save(obj, temporary))
