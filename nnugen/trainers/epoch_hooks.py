"""``EpochHooks``: what every nnugen trainer does around nnU-Net's epochs, as overrides of its hooks.

- rank 0 writes ``training_progress.json`` (progress_report.py) and, with ``show_progress``, draws the run's
  progress bar with nnU-Net's lines printed above it (epoch_progress.py);
- the epoch's extra metrics go to the log and W&B (epoch_metrics.py); non-finite steps are counted and a run that
  only skips stops (nonfinite_guard.py); the first epoch logs its peak memory against the memory plan;
- checkpoints are written every ``training.save_every`` epochs, before the log announces the epoch (epoch_end.py),
  and the moving-average pseudo Dice stays finite;
- a task with ``has_previews`` writes previews every ``training.preview_every`` epochs and after the last, also to
  W&B (training_previews.py), from the first case of the last validation batch;
- the last epoch checks the final weights are finite before nnU-Net writes them.
The attributes used here are set by ``NnugenTrainer.__init__``.
"""

from __future__ import annotations

import os
from time import time
from typing import ClassVar

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnugen.evaluation.previews import write_panels
from nnugen.folders.checkpoint_files import remove_torn_writes, unwrapped_network
from nnugen.models.model_summary import log_task_summary
from nnugen.trainers.ddp import save_rank_weights
from nnugen.trainers.epoch_end import epoch_checkpoints, finite_ema, print_epoch_summary
from nnugen.trainers.nonfinite_guard import check_final_weights, finite_outputs
from nnugen.trainers.peak_memory import peak_memory_gb, peak_memory_note
from nnugen.trainers.training_previews import first_case, preview_due, preview_path, send_to_wandb
from nnugen.trainers.training_progress import TrainingProgress


class EpochHooks(nnUNetTrainer):
    best_by_loss: ClassVar[bool] = False
    """True where the pseudo-Dice slot holds minus the validation loss (generative tasks): the log says so."""
    has_previews: ClassVar[bool] = False
    """True for tasks that produce images: ``preview_panels`` gives them."""

    def on_train_start(self):
        super().on_train_start()
        if self.local_rank == 0:  # also when a kill tore the first checkpoint write and --c found none to resume
            log_task_summary(self.print_to_log_file, self.plans_manager.plans, self.dataset_json,
                             self.configuration_name, self.nnugen_task, self.settings)  # torchinfo (model_summary.py)
            for name in remove_torn_writes(self.output_folder):
                self.print_to_log_file(f"removed {name}, left by a checkpoint write that was interrupted")
            if self.show_progress:
                self.progress_report.open_bar(self.training_progress())

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self._nonfinite_before_epoch, self._applied_before_epoch = self.nonfinite.total, self.nonfinite.applied
        self.progress_report.new_epoch()
        self.report_progress(force=True)

    def training_progress(self, finished: bool = False) -> TrainingProgress:
        """Where the run is: epoch, step of the epoch, the moving average of the training loss."""
        report = self.progress_report
        return TrainingProgress(self.current_epoch, self.num_epochs, report.step, self.num_iterations_per_epoch,
                                report.loss, finished)

    def report_progress(self, force: bool = False, finished: bool = False) -> None:
        """Rank 0: the bar (when shown) and ``training_progress.json`` (progress_report.py)."""
        self.progress_report.show(self.training_progress(finished), force)

    def on_train_epoch_end(self, train_outputs: list[dict]):
        super().on_train_epoch_end(finite_outputs(train_outputs))
        self.log_metric("nonfinite_steps", self.nonfinite.total - self._nonfinite_before_epoch)
        self.nonfinite.check_epoch(self._applied_before_epoch, self.current_epoch)
        peak = peak_memory_gb(self.device)
        if peak is not None:
            self.log_metric("peak_memory_gb", peak)
            if not self._peak_reported:  # the first epoch of this run has seen every kind of step
                self.print_to_log_file(peak_memory_note(peak, self.settings.memory))
                self._peak_reported = True

    def on_validation_epoch_end(self, val_outputs: list[dict]):
        super().on_validation_epoch_end(val_outputs)
        self.repair_nan_ema()

    def on_epoch_end(self):
        """nnU-Net's epoch end with the epoch's checkpoints written before the log announces it (epoch_end.py)."""
        self.epoch_metric_means = self._metrics.write(self.current_epoch, self.print_to_log_file, self.logger.loggers,
                                                      self.local_rank == 0)
        self.logger.log("epoch_end_timestamps", time(), self.current_epoch)
        ema = self.logger.get_value("ema_fg_dice", step=-1)
        new_best = self._best_ema is None or ema > self._best_ema
        if new_best:
            self._best_ema = ema
        for name in epoch_checkpoints(self.current_epoch, self.save_every, self.num_epochs, new_best,
                                      self.keep_epochs):
            self.save_checkpoint(os.path.join(self.output_folder, name))
        print_epoch_summary(self.print_to_log_file, self.logger.get_value, self._best_ema if new_best else None,
                            self.best_by_loss)
        if self.local_rank == 0:
            self.plot_progress()
            if self.has_previews and preview_due(self.current_epoch, self.settings.training.preview_every,
                                                 self.num_epochs):
                self.write_preview(self.current_epoch)
        self.current_epoch += 1
        self.progress_report.new_epoch()
        self.report_progress(force=True)

    def validation_step(self, batch: dict) -> dict:
        self.preview_batch = first_case(batch)
        return super().validation_step(batch)

    def preview_panels(self, epoch: int) -> tuple[np.ndarray, list | None] | None:
        """Panels (N, *spatial) of the epoch's preview and their grey ranges (evaluation/previews.py
        ``write_panels``), computed with the network in eval mode and without gradients; None for no preview."""
        return None

    def write_preview(self, epoch: int) -> None:
        """``previews/epoch_EEEE.png`` (+ .gif in 3D) from ``preview_panels``, logged and sent to W&B."""
        network = unwrapped_network(self)
        training = network.training
        network.eval()
        try:
            with torch.no_grad():
                panels = self.preview_panels(epoch)
        finally:
            network.train(training)
        if panels is None:
            return
        images, ranges = panels
        files = write_panels(images, preview_path(self.output_folder, epoch), ranges)
        self.print_to_log_file(f"preview: {', '.join(str(f) for f in files)}")
        send_to_wandb(self.logger.loggers, files, epoch)

    def plot_progress(self) -> None:
        """Rank 0, every epoch: nnU-Net's ``progress.png``; the generative trainers plot their own losses."""
        self.logger.plot_progress_png(self.output_folder)

    def on_train_end(self):
        check_final_weights(unwrapped_network(self))  # before nnU-Net writes the final checkpoint, then deletes latest
        self.progress_report.close_bar()
        super().on_train_end()
        self.report_progress(force=True, finished=True)
        if self.is_ddp:  # tests and debugging: $NNUGEN_RANK_WEIGHTS_DIR (ddp.py)
            save_rank_weights(self.local_rank, lambda: {"network": unwrapped_network(self).state_dict(),
                                                        "extra": self.extra_checkpoint_state()})

    def repair_nan_ema(self) -> None:
        """Keep the moving-average pseudo Dice finite (epoch_end.py says why)."""
        ema = self.logger.get_value("ema_fg_dice", step=None)
        if ema:
            ema[-1] = finite_ema(ema)
        if self._best_ema is not None and not np.isfinite(self._best_ema):
            self._best_ema = None
