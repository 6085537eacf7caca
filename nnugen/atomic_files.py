"""Atomic writes: a temporary file in the same folder, flushed and fsynced, then ``os.replace``d over the target.
Readers see the old file or the new one, never half of one, even after ``kill -9`` mid-write; the previous file
stays valid until the swap. Every file nnugen writes goes through here. Torch-free (torch is imported lazily)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path`` to write to; on success it replaces ``path``, on error it vanishes.
    ``suffix`` keeps the ending for writers that pick the format from it (SimpleITK: ``.nii.gz``)."""
    path = Path(path)
    temporary = _new_temporary_file(path, suffix)
    try:
        yield Path(temporary)
        with open(temporary, "rb") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def torn_writes(path: str | os.PathLike) -> list[Path]:
    """The temporaries that writes of ``path`` killed mid-way (``kill -9``, power loss) left next to it."""
    path = Path(path)
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.*.tmp*"))


def _new_temporary_file(path: Path, suffix: str) -> str:
    """An empty ``.NAME.RANDOM.tmpSUFFIX`` next to ``path`` with the mode ``open(path, "w")`` would give (0o666 less
    the umask); ``tempfile.mkstemp`` makes it 0o600, which would hide plans and checkpoints from the user's group."""
    for _ in range(100):
        temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp{suffix}"
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
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=4, sort_keys=False) + "\n")


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], None], suffix: str = "") -> None:
    """Atomic version of any ``write(path)`` function, e.g. ``lambda p: torch.save(obj, p)``."""
    with atomic_path(path, suffix) as temporary:
        write(temporary)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    atomic_write_with(path, lambda temporary: torch.save(obj, temporary))
