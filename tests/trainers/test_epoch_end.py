"""The pieces of the trainers' epoch end (nnugen/trainers/epoch_end.py): the NaN-proof EMA pseudo Dice, which
checkpoints an epoch writes and in which order, and nnU-Net's summary lines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnugen.trainers.epoch_end import epoch_checkpoints, finite_ema, print_epoch_summary


@pytest.mark.parametrize(("ema", "expected"), [
    ([0.5, math.nan], 0.5),
    ([math.nan], 0.0),
    ([0.5, 0.7], 0.7),
    ([0.25, math.nan, math.inf], 0.25),
    ([math.nan, math.nan], 0.0),
])
def test_the_latest_ema_falls_back_to_the_last_finite_value_then_zero(ema, expected):
    assert finite_ema(ema) == expected


def test_a_finite_latest_ema_is_kept_as_it_is():
    latest = np.float64(0.625)
    assert finite_ema([0.5, latest]) is latest


@pytest.mark.parametrize(("epoch", "save_every", "new_best", "expected"), [
    (0, 1, True, ["checkpoint_best.pth", "checkpoint_latest.pth"]),
    (0, 2, True, ["checkpoint_best.pth"]),
    (1, 2, False, ["checkpoint_latest.pth"]),
    (2, 2, False, []),
    (4, 50, False, ["checkpoint_latest.pth"]),  # the last epoch of 5 always writes latest
    (4, 50, True, ["checkpoint_best.pth", "checkpoint_latest.pth"]),
])
def test_best_goes_first_and_latest_follows_every_save_every_epochs_and_the_last(epoch, save_every, new_best, expected):
    assert epoch_checkpoints(epoch, save_every, 5, new_best) == expected


def test_kept_epochs_get_a_numbered_copy_named_by_the_epochs_finished():
    kept = [epoch for epoch in range(10) if "checkpoint_epoch" in " ".join(epoch_checkpoints(epoch, 50, 10, False,
                                                                                              (1, 3, 10)))]
    assert kept == [0, 2, 9]
    assert epoch_checkpoints(2, 1, 10, True, (3,)) == ["checkpoint_best.pth", "checkpoint_latest.pth",
                                                        "checkpoint_epoch_0003.pth"]


def _logged(**values):
    def get_value(key, step):
        assert step == -1
        return values[key]
    return get_value


def test_the_summary_prints_nnunets_lines_and_a_new_best_only_when_there_is_one():
    get_value = _logged(train_losses=0.123456, val_losses=-0.5, dice_per_class_or_region=[0.81234, 0.5],
                        epoch_start_timestamps=10.0, epoch_end_timestamps=12.3456)
    lines = []
    print_epoch_summary(lambda *args: lines.append(args), get_value, None)
    assert lines == [("train_loss", 0.1235), ("val_loss", -0.5), ("Pseudo dice", [0.8123, 0.5]),
                     ("Epoch time: 2.35 s",)]
    lines.clear()
    print_epoch_summary(lambda *args: lines.append(args), get_value, 0.712345)
    assert len(lines) == 5 and lines[-1] == ("Yayy! New best EMA pseudo Dice: 0.7123",)


def test_a_generative_summary_names_the_validation_loss_and_prints_no_pseudo_dice():
    """The generative trainers keep minus the validation loss in the pseudo-Dice slot (it picks checkpoint_best);
    their log says what it is."""
    get_value = _logged(train_losses=0.123456, val_losses=0.5, dice_per_class_or_region=[-0.5],
                        epoch_start_timestamps=10.0, epoch_end_timestamps=12.3456)
    lines = []
    print_epoch_summary(lambda *args: lines.append(args), get_value, -0.481234, best_by_loss=True)
    assert lines == [("train_loss", 0.1235), ("val_loss", 0.5), ("Epoch time: 2.35 s",),
                     ("New best validation loss: 0.4812 (moving average)",)]
