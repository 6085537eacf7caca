"""Per-case evaluation work, in this process or in spawned processes, as nnU-Net's ``compute_metrics_on_folder``
does with ``-np`` (spawn: safe under any parent, CUDA and threads included).

A spawned process first imports torch, SciPy and MONAI: about 4 s on a 2-core machine before its first case. A few
small cases (a validation fold of 64 x 64 phantoms: milliseconds each) then wait seconds for processes that save
nothing, once per training and per ``nnugen_evaluate``. So the pool is used only when the images are big enough to
repay it: at least POOL_MIN_BYTES of files on disk (compressed NIfTI; about 40 cases of 128^3 labels)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import TypeVar

Job = TypeVar("Job")
Result = TypeVar("Result")

POOL_MIN_BYTES = 8 * 2**20
"""Files of the cases, in bytes, below which they are evaluated in this process whatever ``num_processes`` says."""


def files_bytes(paths: Sequence[str | os.PathLike]) -> int:
    """Bytes on disk of ``paths`` (missing files count 0: the case checks report them)."""
    return sum(os.path.getsize(p) for p in paths if os.path.isfile(p))


def map_cases(function: Callable[[Job], Result], jobs: Sequence[Job], num_processes: int,
              files: Sequence[str | os.PathLike]) -> list[Result]:
    """``[function(job) for job in jobs]``, in ``num_processes`` spawned processes when there is more than one job and
    the cases' ``files`` hold at least POOL_MIN_BYTES, else in this process (same results, same order)."""
    if num_processes > 1 and len(jobs) > 1 and files_bytes(files) >= POOL_MIN_BYTES:
        with multiprocessing.get_context("spawn").Pool(min(num_processes, len(jobs))) as pool:
            return pool.map(function, jobs)
    return [function(job) for job in jobs]
