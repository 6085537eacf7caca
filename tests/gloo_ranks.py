"""What several processes compute together, for tests: ``ranks_of(compute, ...)`` runs ``compute(rank)`` in spawned
gloo processes joined through a file store, and returns every rank's result. Shared by the tests of partitioned
sampling, partitioned prediction and the DDP objective (``tests/`` is on ``sys.path`` through its conftest.py, and
spawned processes inherit it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def ranks_of(compute: Callable[[int], object], world: int, tmp_path_factory, name: str,
             timeout_s: float | None = 60.0, threads: int | None = 1) -> list:
    """``compute(rank)`` (a module-level function, so that spawn can pickle it) on ``world`` gloo processes with
    ``threads`` torch threads each (None: torch's default) and the process group's ``timeout_s`` (None: torch's
    default); each rank's result (tensors and plain values, saved and loaded with ``weights_only``) in rank order.

    One retry when a rank dies by a signal at gloo's start: under a loaded CI machine gloo's start once aborted rank 0
    ("terminate called without an active exception") before any test code ran. A Python error in a rank is not
    retried."""
    for attempt in range(2):
        folder = tmp_path_factory.mktemp(name)
        try:
            mp.start_processes(_worker, args=(compute, world, str(folder), timeout_s, threads), nprocs=world,
                               join=True, start_method="spawn")
            break
        except mp.ProcessExitedException:
            if attempt == 1:
                raise
    return [torch.load(folder / f"rank_{rank}.pt", weights_only=True) for rank in range(world)]


def _worker(rank: int, compute, world: int, folder: str, timeout_s: float | None, threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)
    timeout = {} if timeout_s is None else {"timeout": timedelta(seconds=timeout_s)}
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world, **timeout)
    try:
        torch.save(compute(rank), f"{folder}/rank_{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()
