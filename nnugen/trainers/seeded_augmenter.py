"""Seeded augmentation workers, so that ``nnugen_train --seed S`` repeats a whole run on the CPU.

nnU-Net 2.8.1 feeds training from ``NonDetMultiThreadedAugmenter(..., seeds=None)``: every worker reseeds NumPy
from the operating system (patch choice and crop) and inherits the main process's torch state (augmentation), and
batches arrive in whatever order the workers finish. ``seeded_augmenter`` keeps nnU-Net's data loader and transforms
and swaps the augmenter for batchgenerators' ``MultiThreadedAugmenter``, which reads the workers round-robin, with
one seed per worker derived from (seed, rank, stream, worker, first epoch). A resumed run therefore draws new,
repeatable batches; it does not replay the batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter

from nnugen.seeding import derived_seed


class SeededWorkerLoader:
    """nnU-Net's data loader inside a worker, seeding NumPy, torch and random from the worker's seed first."""

    def __init__(self, loader, seeds: list[int]):
        self.loader = loader
        self.seeds = seeds

    @property
    def was_initialized(self) -> bool:  # batchgenerators resets it before starting workers
        return self.loader.was_initialized

    @was_initialized.setter
    def was_initialized(self, value: bool) -> None:
        self.loader.was_initialized = value

    def set_thread_id(self, thread_id: int) -> None:
        """Called once in each worker before its first batch."""
        seed = self.seeds[thread_id]
        np.random.seed(seed)
        torch.manual_seed(seed)
        random.seed(seed)
        torch.set_num_threads(1)  # as nnU-Net's own workers
        self.loader.set_thread_id(thread_id)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.loader)


def seeded_augmenter(augmenter, seed: int, rank: int, stream: str, epoch: int):
    """nnU-Net's augmenter replaced by a seeded, ordered one; a single-threaded augmenter (``nnUNet_n_proc_DA=0``)
    runs in the main process, which is seeded already, and is returned unchanged."""
    if not isinstance(augmenter, NonDetMultiThreadedAugmenter):
        return augmenter
    augmenter._finish()  # nnU-Net started its unseeded workers already
    workers = augmenter.num_processes
    seeds = [derived_seed(seed, "augmentation", rank, stream, worker, epoch) % 2**32 for worker in range(workers)]
    return MultiThreadedAugmenter(SeededWorkerLoader(augmenter.generator, seeds), augmenter.transform, workers,
                                  num_cached_per_queue=max(2, augmenter.num_cached // workers), seeds=seeds,
                                  pin_memory=augmenter.pin_memory, wait_time=augmenter.wait_time)
