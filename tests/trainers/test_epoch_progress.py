"""The run's progress bar (nnugen/trainers/epoch_progress.py), its default (run_flags.progress_wanted) and the
``training_progress.json`` a watcher reads (nnugen/trainers/training_progress.py)."""

from __future__ import annotations

import io
import json
import math
import sys

import pytest

from nnugen.run_flags import progress_wanted
from nnugen.trainers.epoch_progress import RunProgressBar
from nnugen.trainers.progress_report import ProgressReport
from nnugen.trainers.training_progress import (
    PROGRESS_FILE,
    TrainingProgress,
    read_training_progress,
    smoothed_loss,
    write_training_progress,
)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_shows_epoch_step_loss_and_time_left():
    screen = io.StringIO()
    bar = RunProgressBar(TrainingProgress(epoch=2, epochs=5, iteration=0, iterations=10), file=screen,
                         redirect_stdout=False)
    try:
        bar.show(TrainingProgress(epoch=2, epochs=5, iteration=4, iterations=10, loss=0.123456))
        assert bar.bar.n == 24 and bar.bar.total == 50
        bar.bar.refresh()
    finally:
        bar.close()
    last = screen.getvalue().split("\r")[-2]
    assert last.startswith("epoch 3/5:  48%")
    assert "24/50 [" in last and "<" in last  # elapsed<remaining: tqdm's ETA
    assert last.rstrip().endswith("step 4/10 loss 0.1235]")


def test_after_the_last_epoch_the_bar_reads_the_last_epoch_full():
    screen = io.StringIO()
    bar = RunProgressBar(TrainingProgress(3, 3, 0, 4), file=screen, redirect_stdout=False)
    bar.close()
    assert screen.getvalue().split("\r")[-1].startswith("epoch 3/3: 100%")


def test_lines_printed_while_the_bar_is_open_go_above_it_and_stdout_comes_back(capsys):
    before = sys.stdout
    screen = io.StringIO()
    bar = RunProgressBar(TrainingProgress(0, 2, 0, 3), file=screen)
    try:
        print("2026-12-03 10:00:00: Epoch 0")
        print("partial", end="")
        assert sys.stdout is not before
    finally:
        bar.close()
    assert sys.stdout is before
    assert capsys.readouterr().out == "2026-12-03 10:00:00: Epoch 0\n"  # the unfinished line waits for its newline


@pytest.mark.parametrize(("flag", "stream", "expected"), [
    (None, _Terminal(), True), (None, io.StringIO(), False), (True, io.StringIO(), True), (False, _Terminal(), False),
])
def test_the_bar_is_on_by_default_in_a_terminal_only(flag, stream, expected):
    assert progress_wanted(flag, stream) is expected


def test_the_loss_shown_is_a_moving_average_that_skips_non_finite_steps():
    average = None
    for loss in (1.0, math.nan, 0.0, 2.0):
        average = smoothed_loss(average, loss)
    assert average == pytest.approx(0.9 * (0.9 * 1.0 + 0.1 * 0.0) + 0.1 * 2.0)
    assert smoothed_loss(None, math.inf) is None


def test_the_progress_file_round_trips_and_a_missing_or_foreign_one_reads_as_none(tmp_path):
    assert read_training_progress(tmp_path) is None
    progress = TrainingProgress(epoch=1, epochs=4, iteration=7, iterations=25, loss=0.5, finished=False)
    write_training_progress(tmp_path, progress)
    assert json.loads((tmp_path / PROGRESS_FILE).read_text()) == {"epoch": 1, "epochs": 4, "iteration": 7,
                                                                  "iterations": 25, "loss": 0.5, "finished": False}
    assert read_training_progress(tmp_path) == progress
    assert (progress.steps_done, progress.steps_total) == (32, 100)
    (tmp_path / PROGRESS_FILE).write_text('{"epoch": 1}')
    assert read_training_progress(tmp_path) is None


def test_the_trainers_steps_move_the_bar_and_the_progress_file(tmp_path):
    """NnugenTrainer.train_step around the step itself: the step count, the smoothed loss (a skipped step's NaN left
    out), the bar and, when forced (epoch ends), training_progress.json."""
    import numpy as np

    from nnugen.trainers.nnugen_trainer import NnugenTrainer

    trainer = NnugenTrainer.__new__(NnugenTrainer)
    trainer.local_rank, trainer.current_epoch, trainer.num_epochs, trainer.num_iterations_per_epoch = 0, 1, 2, 3
    trainer.progress_report = ProgressReport(str(tmp_path))
    screen = io.StringIO()
    bar = trainer.progress_report.bar = RunProgressBar(trainer.training_progress(), file=screen, redirect_stdout=False)
    trainer.training_step = lambda batch: {"loss": np.array(batch)}
    try:
        for loss in (0.5, math.nan, 0.25):
            assert trainer.train_step(loss)["loss"] == np.array(loss) or math.isnan(loss)
        assert bar.bar.n == 6 and bar.bar.postfix == "step 3/3 loss 0.475"
    finally:
        trainer.progress_report.close_bar()
    assert trainer.progress_report.bar is None
    trainer.report_progress(force=True)
    assert read_training_progress(tmp_path) == TrainingProgress(1, 2, 3, 3, 0.9 * 0.5 + 0.1 * 0.25)
