"""The trainers' extra metrics (nnugen/trainers/epoch_metrics.py), in one process: per-epoch means of the finite
values, written by rank 0 to the training log and to nnU-Net's other loggers."""

from __future__ import annotations

import math

from nnugen.trainers.epoch_metrics import EpochMetrics


class _Logger:
    def __init__(self) -> None:
        self.logged: list[tuple] = []

    def log(self, key, value, epoch) -> None:
        self.logged.append((key, value, epoch))


def _metrics() -> EpochMetrics:
    metrics = EpochMetrics()
    for value in (1.0, 3.0, math.nan):
        metrics.add("train/loss_mse", value)
    metrics.add("val/dice", 0.25)
    return metrics


def test_the_writing_rank_logs_the_means_and_a_new_epoch_starts():
    metrics, lines, logger = _metrics(), [], _Logger()
    metrics.write(4, lines.append, [logger], writes=True)
    assert lines == ["nnugen metrics: train/loss_mse 2, val/dice 0.25"]
    assert logger.logged == [("train/loss_mse", 2.0, 4), ("val/dice", 0.25, 4)]
    metrics.write(5, lines.append, [logger], writes=True)  # nothing collected since: nothing written
    assert len(lines) == 1 and len(logger.logged) == 2


def test_the_other_ranks_collect_but_write_nothing():
    metrics, lines, logger = _metrics(), [], _Logger()
    metrics.write(4, lines.append, [logger], writes=False)
    assert lines == [] and logger.logged == []
    assert metrics.collect() == {}
