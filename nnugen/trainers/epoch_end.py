"""The end of an epoch in nnugen's trainers: which checkpoints to write, nnU-Net's summary lines, and the EMA pseudo
Dice kept finite.

The checkpoints are written before the log announces the epoch ("Epoch time"). nnU-Net prints first and saves
afterwards, so a kill in between lost an epoch the log called finished. checkpoint_latest is also written after the
last epoch (nnU-Net skips it there), which covers the moment before checkpoint_final. checkpoint_best goes first: a
kill between the two resumes from the older latest.

nnU-Net's logger computes the EMA pseudo Dice from the previous EMA: one NaN (a validation epoch without foreground)
would make it NaN forever and checkpoint_best would never be written again."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def epoch_checkpoints(epoch: int, save_every: int, num_epochs: int, new_best: bool,
                      keep_epochs: Sequence[int] = ()) -> list[str]:
    """The checkpoint files to write at the end of ``epoch`` (0-based), in order: checkpoint_best when the epoch
    raised the best EMA pseudo Dice, checkpoint_latest every ``save_every`` epochs and after the last one, and
    ``checkpoint_epoch_NNNN.pth`` (NNNN = epoch + 1, the epochs finished) when that count is in ``keep_epochs``."""
    names = ["checkpoint_best.pth"] if new_best else []
    if (epoch + 1) % save_every == 0 or epoch == num_epochs - 1:
        names.append("checkpoint_latest.pth")
    if epoch + 1 in keep_epochs:
        names.append(f"checkpoint_epoch_{epoch + 1:04d}.pth")
    return names


def finite_ema(ema: Sequence[float]) -> float:
    """The latest EMA pseudo Dice made finite: the last value if finite, else the last finite value before it, else
    0.0 (``[0.5, nan]`` gives 0.5, ``[nan]`` 0.0). ``ema`` is the logger's ``ema_fg_dice``, one value per epoch."""
    if ema and np.isfinite(ema[-1]):
        return ema[-1]
    finite = [value for value in ema[:-1] if np.isfinite(value)]
    return finite[-1] if finite else 0.0


def print_epoch_summary(print_to_log_file: Callable[..., None], get_value: Callable, new_best: float | None,
                        best_by_loss: bool = False) -> None:
    """nnU-Net's lines at the end of an epoch, read from its logger (``get_value``): the losses, the pseudo Dice, the
    epoch time in seconds, and ``new_best`` when the epoch raised the best EMA pseudo Dice (None when it did not).

    ``best_by_loss`` (the generative tasks, whose pseudo-Dice slot holds minus the validation loss): no pseudo Dice
    line, and the new best is printed as what it is, ``New best validation loss: X (moving average)``."""
    print_to_log_file("train_loss", np.round(get_value("train_losses", step=-1), decimals=4))
    print_to_log_file("val_loss", np.round(get_value("val_losses", step=-1), decimals=4))
    if not best_by_loss:
        print_to_log_file("Pseudo dice", [np.round(i, decimals=4) for i in get_value("dice_per_class_or_region", -1)])
    seconds = get_value("epoch_end_timestamps", step=-1) - get_value("epoch_start_timestamps", step=-1)
    print_to_log_file(f"Epoch time: {np.round(seconds, decimals=2)} s")
    if new_best is not None and best_by_loss:
        print_to_log_file(f"New best validation loss: {np.round(-new_best, decimals=4)} (moving average)")
    elif new_best is not None:
        print_to_log_file(f"Yayy! New best EMA pseudo Dice: {np.round(new_best, decimals=4)}")
