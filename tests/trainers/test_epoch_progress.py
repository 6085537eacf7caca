"""The ``--progress`` bar of an epoch (nnugen/trainers/epoch_progress.py)."""

from __future__ import annotations

from nnugen.trainers.epoch_progress import epoch_progress_bar


def test_one_bar_per_epoch_over_its_steps_cleared_when_closed():
    bar = epoch_progress_bar(250, 7)
    try:
        assert (bar.total, bar.desc, bar.leave) == (250, "epoch 7", False)
        bar.update()
        assert bar.n == 1
    finally:
        bar.close()
