"""``TrainingStepHooks``: nnU-Net's ``train_step`` for every nnugen trainer, as overrides of its hooks.

``training_step`` runs ``compute_loss`` (the one method a task implements) under the training precision's autocast,
skips a non-finite loss on every rank together (nonfinite_guard.py), accumulates gradients over
``memory.grad_accumulation`` with DDP's all-reduce on the last micro-step only (ddp.py), and steps the optimiser
after clipping, skipping a non-finite gradient (optimizer_step.py). Under ``--partition`` every rank takes rank 0's
batch first (spatial_training.py). ``log_metric`` collects extra metrics for the epoch's log line and W&B
(epoch_metrics.py). The attributes used here (``settings``, ``nonfinite``, ``progress_report``, ``_micro_step``,
``_metrics``, ``amp_dtype``, ``grad_scaler``) are set by ``NnugenTrainer.__init__``.
"""

from __future__ import annotations

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnugen.networks.spatial_partition import whole
from nnugen.trainers.ddp import all_ranks_agree, gradient_sync
from nnugen.trainers.optimizer_step import clip_and_step, scaled_backward
from nnugen.trainers.spatial_training import SpatialDomain, same_step_everywhere
from nnugen.trainers.training_precision import training_autocast


class TrainingStepHooks(nnUNetTrainer):
    def autocast(self):
        """The training precision's autocast (training_precision.py), for ``compute_loss`` and the like."""
        return training_autocast(self.device, self.amp_dtype)

    def log_metric(self, name: str, value: float | torch.Tensor) -> None:
        """One value of an extra metric, e.g. a loss part. Its mean over the epoch's steps (and ranks) goes to the
        training log and to W&B as ``train/NAME`` (network in training mode) or ``val/NAME``."""
        phase = "train" if self.network.training else "val"
        self._metrics.add(f"{phase}/{name}", value.detach().float().item() if torch.is_tensor(value) else value)

    def compute_loss(self, data: torch.Tensor, target: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch; subclasses replace this (nnU-Net's segmentation loss by default)."""
        return self.loss(self.network(data), target)

    def train_step(self, batch: dict) -> dict:
        output = self.training_step(batch)
        self.progress_report.add_step(float(output["loss"]))
        self.report_progress()
        return output

    def training_step(self, batch: dict) -> dict:
        """One training step (nnU-Net's ``train_step``): the loss, skipped when non-finite, and the optimiser step
        after the last micro-step of an accumulation."""
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        if isinstance(self.network, SpatialDomain):
            data, target = same_step_everywhere(data, target, self.device)
        accumulation = self.settings.memory.grad_accumulation
        if self._micro_step % accumulation == 0:
            self.optimizer.zero_grad(set_to_none=True)
        last_micro_step = (self._micro_step + 1) % accumulation == 0
        # DDP all-reduces gradients in backward: only the last micro-step of an accumulation needs it
        with self.autocast(), gradient_sync(self.network, self.is_ddp, last_micro_step):
            loss = self.compute_loss(data, target)
            # all ranks skip together, else the next gradient all-reduce would wait forever
            finite = all_ranks_agree(bool(torch.isfinite(whole(loss.detach())).all()), self.device)
            if not finite:  # a finite step is recorded once its optimiser step had a finite gradient too
                self.nonfinite.skip("non-finite loss skipped", self.settings.memory.amp, self.print_to_log_file)
                self.optimizer.zero_grad(set_to_none=True)
                self._micro_step = 0
                return {"loss": np.array(np.nan)}
            scaled_backward(loss / accumulation, self.grad_scaler)
        self._micro_step += 1
        if last_micro_step:
            self.optimizer_step()
        return {"loss": whole(loss.detach()).float().cpu().numpy()}

    def optimizer_step(self) -> None:
        """Clip and step; without fp16's GradScaler a non-finite gradient skips the step (optimizer_step.py)."""
        if not clip_and_step(self.network.parameters(), self.optimizer, self.grad_scaler):
            self.nonfinite.skip("non-finite gradient: step skipped", self.settings.memory.amp, self.print_to_log_file)
            self.optimizer.zero_grad(set_to_none=True)
            return
        self.nonfinite.record(True, self.settings.memory.amp)
        self.after_optimizer_step()

    def after_optimizer_step(self) -> None:
        """Called after every optimiser step (e.g. to update EMA weights)."""
