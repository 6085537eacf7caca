"""nnugen's extra metrics (loss parts, skipped steps), averaged per epoch over steps and ranks.

nnU-Net's local logger accepts a fixed set of keys, one value per epoch, and its ``progress.png`` breaks when a key
misses an epoch, so the extra metrics do not go there. ``NnugenTrainer.log_metric`` collects them here; at the end of
each epoch their means go to the training log and to nnU-Net's other loggers (W&B when ``nnUNet_wandb_enabled=1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from nnugen.trainers.ddp import mean_over_ranks


class EpochMetrics:
    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, key: str, value: float) -> None:
        """One value of a metric; non-finite values are left out of the mean (the skipped-step count records them)."""
        value = float(value)
        if math.isfinite(value):
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def collect(self) -> dict[str, float]:
        """The means over this epoch's steps on all ranks (every rank must call it), then start a new epoch."""
        means = mean_over_ranks(self.sums, self.counts)
        self.sums, self.counts = {}, {}
        return means

    def write(self, epoch: int, print_to_log_file: Callable[[str], None], loggers: Iterable,
              writes: bool) -> dict[str, float]:
        """``collect`` (every rank must call it) and return the means; where ``writes`` (rank 0), they go to the
        training log and, as values of ``epoch``, to nnU-Net's non-local ``loggers`` (W&B)."""
        means = self.collect()
        if not means or not writes:
            return means
        print_to_log_file("nnugen metrics: " + ", ".join(f"{key} {value:.5g}" for key, value in means.items()))
        for logger in loggers:
            for key, value in means.items():
                logger.log(key, value, epoch)
        return means
