"""Rank 0's report of where a training run is: the step of the epoch and the moving average of its loss
(training_progress.py), drawn on the run's bar when one is shown (epoch_progress.py) and written to
``training_progress.json`` at most every ``WRITE_INTERVAL`` seconds, or at once when forced (epoch starts and ends,
the end of the run). Other ranks count their steps and report nothing."""

from __future__ import annotations

from time import time

from nnugen.trainers.epoch_progress import RunProgressBar
from nnugen.trainers.training_progress import WRITE_INTERVAL, TrainingProgress, smoothed_loss, write_training_progress


class ProgressReport:
    def __init__(self, folder: str, rank: int = 0) -> None:
        self.folder, self.reports = folder, rank == 0
        self.step, self.loss, self.bar, self.written = 0, None, None, 0.0

    def open_bar(self, progress: TrainingProgress) -> None:
        """Show the run's bar from now on (rank 0)."""
        if self.reports:
            self.bar = RunProgressBar(progress)

    def new_epoch(self) -> None:
        self.step = 0

    def add_step(self, loss: float) -> None:
        """One training step done, with its loss (NaN for a skipped step, which the average leaves out)."""
        self.step += 1
        self.loss = smoothed_loss(self.loss, loss)

    def show(self, progress: TrainingProgress, force: bool = False) -> None:
        if not self.reports:
            return
        if self.bar is not None:
            self.bar.show(progress)
        if force or time() - self.written >= WRITE_INTERVAL:
            write_training_progress(self.folder, progress)
            self.written = time()

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
