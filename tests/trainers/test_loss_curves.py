"""``progress.png`` of the generative tasks (nnugen/trainers/loss_curves.py): the curves it is drawn from, the history
of loss parts a resumed run continues, and the epoch end of a generative trainer (its own plot, no pseudo Dice)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
from nnunetv2.training.logging.nnunet_logger import MetaLogger

from nnugen.trainers.epoch_metrics import EpochMetrics
from nnugen.trainers.loss_curves import LOSSES_FILE, curves, read_history, record
from nnugen.trainers.nnugen_generative_trainer import NnugenGenerativeTrainer
from nnugen.trainers.progress_report import ProgressReport

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _same(actual: list[float], expected: list[float]) -> bool:
    """Equal lists where NaN equals NaN."""
    return len(actual) == len(expected) and all(
        (math.isnan(a) and math.isnan(e)) or a == e for a, e in zip(actual, expected))


def test_record_puts_each_epoch_at_its_index_and_none_where_a_metric_missed_one():
    history = record({}, 0, {"train/l1": 0.5, "val/l1": 0.25})
    history = record(history, 1, {"train/l1": 0.4, "train/adversarial": 0.1})
    assert history == {"train/l1": [0.5, 0.4], "val/l1": [0.25, None], "train/adversarial": [None, 0.1]}
    # a resumed run that restarts at epoch 1 overwrites it and drops what followed
    history = record({"train/l1": [0.5, 0.4, 0.3]}, 1, {"train/l1": 0.45})
    assert history == {"train/l1": [0.5, 0.45]}


def _logger(tmp_path, epochs: int) -> MetaLogger:
    logger = MetaLogger(str(tmp_path), resume=False)
    logger.loggers = []
    for epoch in range(epochs):
        for key, value in (("epoch_start_timestamps", 10.0 * epoch), ("epoch_end_timestamps", 10.0 * epoch + 4.0),
                           ("lrs", 0.01 / (epoch + 1)), ("train_losses", 1.0 - 0.25 * epoch),
                           ("val_losses", 0.5 + 0.25 * epoch), ("dice_per_class_or_region", [-0.5]),
                           ("mean_fg_dice", -(0.5 + 0.25 * epoch))):
            logger.log(key, value, epoch)
    return logger


def test_the_panels_are_the_tasks_losses_not_a_pseudo_dice(tmp_path):
    logger = _logger(tmp_path, 2)
    history = {"train/l1": [0.5, 0.4], "val/kl": [None, 0.125], "val/psnr": [20.0, 22.0], "val/ssim": [0.5, 0.75],
               "train/nonfinite_steps": [0, 0], "train/peak_memory_gb": [1.0, 1.0]}
    panels = curves(history, logger.get_value, 2)
    assert list(panels) == ["loss", "loss parts", "reconstruction", "epoch"]
    assert panels["loss"] == {"train loss": [1.0, 0.75], "validation loss": [0.5, 0.75],
                              # nnU-Net's EMA of -loss, as a loss again: 0.9 * 0.5 + 0.1 * 0.75
                              "validation loss (moving average, picks checkpoint_best)": [0.5, 0.525]}
    assert panels["loss parts"]["train/l1"] == [0.5, 0.4]
    assert _same(panels["loss parts"]["val/kl"], [math.nan, 0.125])
    assert list(panels["loss parts"]) == ["train/l1", "val/kl"]  # skipped steps and memory are no loss
    assert panels["reconstruction"] == {"val/psnr": [20.0, 22.0], "val/ssim": [0.5, 0.75]}
    assert panels["epoch"] == {"duration [s]": [4.0, 4.0], "learning rate": [0.01, 0.005]}


def test_a_diffusion_model_without_loss_parts_has_no_empty_panels(tmp_path):
    panels = curves({"train/nonfinite_steps": [0]}, _logger(tmp_path, 1).get_value, 1)
    assert list(panels) == ["loss", "epoch"]


def _generative_trainer(tmp_path) -> tuple[NnugenGenerativeTrainer, list[str]]:
    """Only what ``on_epoch_end`` reads."""
    lines: list[str] = []
    trainer = NnugenGenerativeTrainer.__new__(NnugenGenerativeTrainer)
    trainer.output_folder = str(tmp_path)
    trainer.logger = MetaLogger(str(tmp_path), resume=False)
    trainer.logger.loggers = []
    trainer.local_rank, trainer.current_epoch, trainer._best_ema = 0, 0, None
    trainer.num_epochs, trainer.save_every, trainer.keep_epochs, trainer._metrics = 2, 1, (), EpochMetrics()
    trainer.progress_report = ProgressReport(str(tmp_path))
    trainer.num_iterations_per_epoch, trainer.loss_history = 3, {}
    trainer.save_checkpoint = lambda filename: lines.append(f"save {os.path.basename(filename)}")
    trainer.print_to_log_file = lambda *args, **kwargs: lines.append(" ".join(str(a) for a in args))
    return trainer, lines


def test_a_generative_epoch_end_plots_its_losses_and_logs_the_best_validation_loss(tmp_path):
    trainer, lines = _generative_trainer(tmp_path)
    for epoch, (loss, l1) in enumerate([(0.5, 0.25), (0.75, 0.125)]):
        trainer._metrics.add("train/l1", l1)
        for key, value in (("epoch_start_timestamps", 0.0), ("lrs", 0.01), ("train_losses", 1.0),
                           ("val_losses", loss), ("dice_per_class_or_region", [-loss]), ("mean_fg_dice", -loss)):
            trainer.logger.log(key, value, epoch)
        trainer.on_epoch_end()
    assert not any("seudo" in line for line in lines), lines
    best = [line for line in lines if line.startswith("New best")]
    assert best == ["New best validation loss: 0.5 (moving average)"]  # epoch 1's average 0.525 is worse
    assert lines.index("save checkpoint_best.pth") < lines.index("New best validation loss: 0.5 (moving average)")
    assert json.loads((tmp_path / LOSSES_FILE).read_text()) == {"train/l1": [0.25, 0.125]}
    png = (tmp_path / "progress.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE)
    import imageio.v3 as iio

    image = iio.imread(tmp_path / "progress.png")
    assert image.ndim == 3 and image.shape[0] > image.shape[1]  # one row per panel: loss, loss parts, epoch
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, no temporaries left
    # a run resumed after epoch 1 continues the history of epoch 0 only
    assert read_history(tmp_path, 1) == {"train/l1": [0.25]}
    assert read_history(tmp_path / "missing", 1) == {}
    assert np.isfinite(trainer._best_ema)
