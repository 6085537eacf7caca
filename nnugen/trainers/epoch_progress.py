"""The progress bar of a training run (``nnugen_train``; by default in a terminal, ``--progress`` / ``--no-progress``):
one tqdm bar over all training steps of the run, ``epoch 3/50 | 120/250 [02:01<40:12, ...] loss 0.0213``: the epoch,
the steps, the time left (tqdm's ETA over the run's steps; validation time is part of the measured rate) and the
moving average of the training loss (training_progress.py).

nnU-Net prints its epoch lines with ``print``; while the bar is open, ``sys.stdout`` is a stream that hands every
complete line to ``tqdm.write``, which clears the bar, prints the line and draws the bar again below it.
"""

from __future__ import annotations

import sys
from typing import TextIO

from nnugen.trainers.training_progress import LOSS_SMOOTHING, TrainingProgress


class LinesAboveBar:
    """A text stream that prints each complete line above the open tqdm bars, into ``stream``."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.pending = ""

    def write(self, text: str) -> int:
        from tqdm import tqdm

        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            tqdm.write(line, file=self.stream)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


class RunProgressBar:
    """The bar of one run. ``file`` is where it is drawn (stdout, the terminal the run was started in, by default);
    ``redirect_stdout`` makes the lines printed to stdout while it is open go above it. ``show`` each step's
    progress, ``close`` at the end."""

    def __init__(self, progress: TrainingProgress, file: TextIO | None = None, redirect_stdout: bool = True) -> None:
        from tqdm import tqdm

        # tqdm.write clears the bars drawn on the stream it writes to: bar and lines share stdout
        self.bar = tqdm(total=progress.steps_total, initial=progress.steps_done, unit="step", desc=title(progress),
                        file=sys.stdout if file is None else file, dynamic_ncols=True, smoothing=LOSS_SMOOTHING,
                        mininterval=0.5)
        self.stdout = None
        if redirect_stdout:
            self.stdout, sys.stdout = sys.stdout, LinesAboveBar(sys.stdout)
        self.show(progress)
        self.bar.refresh()

    def show(self, progress: TrainingProgress) -> None:
        """Draw ``progress``: the bar at the run's step, the epoch (1-based) and step of the epoch, the loss."""
        self.bar.set_description_str(title(progress), refresh=False)
        loss = "" if progress.loss is None else f" loss {progress.loss:.4g}"
        self.bar.set_postfix_str(f"step {progress.iteration}/{progress.iterations}{loss}", refresh=False)
        self.bar.update(progress.steps_done - self.bar.n)

    def close(self) -> None:
        if self.stdout is not None:
            sys.stdout, self.stdout = self.stdout, None
        self.bar.close()


def title(progress: TrainingProgress) -> str:
    """``epoch i/N``, 1-based; after the last epoch the run's counter is one past it, shown as the last."""
    return f"epoch {min(progress.epoch + 1, progress.epochs)}/{progress.epochs}"
