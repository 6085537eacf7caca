"""``training_progress.json``: where a training run is, for a program that watches it (``nnugen_demo``'s bar).

Every nnugen trainer writes it on rank 0 next to the checkpoints, atomically, at most every ``WRITE_INTERVAL``
seconds and at the end of every epoch, with or without a progress bar on the terminal. nnU-Net's own trainer writes
no such file; the same fields are read from its training log (``training_log_*.txt``) by the watcher instead.

Fields: ``epoch`` (0-based, the epoch running), ``epochs`` (of the run), ``iteration`` (training steps done in this
epoch), ``iterations`` (per epoch), ``loss`` (the moving average of the training loss, None before the first finite
step) and ``finished`` (True once training ended). No import of torch: the demo reads it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

PROGRESS_FILE = "training_progress.json"
WRITE_INTERVAL = 2.0
"""Seconds between two writes within an epoch (each write is a small fsynced file)."""
LOSS_SMOOTHING = 0.1
"""Weight of the newest step in the moving average of the loss shown (and tqdm's ETA smoothing)."""


@dataclass(frozen=True)
class TrainingProgress:
    epoch: int
    epochs: int
    iteration: int
    iterations: int
    loss: float | None = None
    finished: bool = False

    @property
    def steps_done(self) -> int:
        """Training steps of the run done so far (all epochs)."""
        return self.epoch * self.iterations + self.iteration

    @property
    def steps_total(self) -> int:
        return self.epochs * self.iterations


def smoothed_loss(previous: float | None, loss: float) -> float | None:
    """Exponential moving average of the step losses: ``0.9 previous + 0.1 loss``; the first finite loss starts it,
    a non-finite one (a skipped step) leaves it as it was."""
    if not math.isfinite(loss):
        return previous
    return loss if previous is None else (1 - LOSS_SMOOTHING) * previous + LOSS_SMOOTHING * loss


def write_training_progress(folder: str | Path, progress: TrainingProgress) -> None:
    """Write ``folder/training_progress.json`` atomically."""
    from nnugen.atomic_files import atomic_write_json

    atomic_write_json(Path(folder) / PROGRESS_FILE, asdict(progress))


def read_training_progress(folder: str | Path) -> TrainingProgress | None:
    """The progress a trainer last wrote in ``folder``; None when there is none yet or it is not a progress file."""
    try:
        data = json.loads((Path(folder) / PROGRESS_FILE).read_text(encoding="utf-8"))
        return TrainingProgress(**data)
    except (OSError, ValueError, TypeError):
        return None
