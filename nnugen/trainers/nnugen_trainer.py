"""``NnugenTrainer``: what every nnugen trainer shares, as overrides of nnU-Net's hooks.

- run length, optimiser, batch size, gradient accumulation, AMP dtype (training_precision.py) and checkpoint interval
  come from the task's settings in the plans' ``nnugen`` section (``nnugen_task`` names the task);
- ``train_step`` runs ``compute_loss`` (the one method subclasses implement) under AMP, skips non-finite losses and
  gradients (nonfinite_guard.py, optimizer_step.py), and accumulates gradients over ``memory.grad_accumulation``;
- checkpoints are written atomically, never with non-finite weights, every ``training.save_every`` epochs and
  before the log announces the epoch (epoch_end.py); the start of a run deletes the temporaries of writes a kill tore;
- a checkpoint that does not load is reported in one line naming the file;
- DDP on any backend and node count (ddp.py, world_batch.py): the rank's device follows ``LOCAL_RANK``, rank 0 writes;
- ``torch.compile`` follows nnugen's policy (compile_policy.py): only the model's networks, in place, never nnU-Net's
  whole-model wrap around the sampler loop;
- ``training.augmentation`` keeps nnU-Net's training augmentation, mirroring only, or none (training_augmentation.py);
  with a seed, the augmentation workers are seeded and read in order (seeded_augmenter.py);
- ``log_metric`` sends extra metrics (loss parts, skipped steps) to the training log and W&B (epoch_metrics.py);
- rank 0 writes ``training_progress.json`` (progress_report.py) and, with ``show_progress``, draws the run's
  progress bar with nnU-Net's lines printed above it (epoch_progress.py);
- a task with ``has_previews`` writes previews every ``training.preview_every`` epochs and after the last, also to
  W&B (training_previews.py), from the first case of the last validation batch.
"""

from __future__ import annotations

import os
from time import time
from typing import ClassVar

import numpy as np
import torch
import torch.distributed as dist
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnugen.config import TaskSettings, section_of
from nnugen.evaluation.previews import write_panels
from nnugen.folders.checkpoint_files import (
    CheckpointError,
    load_nnunet_checkpoint,
    remove_torn_writes,
    restore_nnunet_checkpoint,
    save_nnunet_checkpoint,
    unwrapped_network,
)
from nnugen.models.compile_policy import apply_compile_policy
from nnugen.models.model_builders import MODEL_BUILDERS, ModelSpec, build_model
from nnugen.models.model_summary import log_task_summary
from nnugen.networks.spatial_partition import whole
from nnugen.run_flags import RunFlags
from nnugen.seeding import seed_everything
from nnugen.tasks import task_settings
from nnugen.trainers.ddp import all_ranks_agree, gradient_sync, rank_device, save_rank_weights, split_over_ranks
from nnugen.trainers.epoch_end import epoch_checkpoints, finite_ema, print_epoch_summary
from nnugen.trainers.epoch_metrics import EpochMetrics
from nnugen.trainers.nonfinite_guard import NonFiniteGuard, check_final_weights, finite_outputs
from nnugen.trainers.optimizer_step import clip_and_step, scaled_backward
from nnugen.trainers.peak_memory import peak_memory_gb, peak_memory_note
from nnugen.trainers.pretrained_start import PRETRAINED_TASKS, load_into_nnunet_network, nnunet_weights
from nnugen.trainers.progress_report import ProgressReport
from nnugen.trainers.seeded_augmenter import seeded_augmenter
from nnugen.trainers.spatial_training import SpatialDomain, describe, same_step_everywhere, spatial_domain
from nnugen.trainers.training_augmentation import spatial_setup, training_transforms
from nnugen.trainers.training_precision import training_amp_dtype, training_autocast
from nnugen.trainers.training_previews import first_case, preview_due, preview_path, send_to_wandb
from nnugen.trainers.training_progress import TrainingProgress


class NnugenTrainer(nnUNetTrainer):
    nnugen_task = "baseline"
    settings_changes: ClassVar[dict] = {}
    """Changes a variant makes to the task's settings, e.g. ``{"diffusion": {"model_output": "eps"}}``."""
    ddp_find_unused_parameters: ClassVar[bool] = False
    """True for models with branches some steps leave unused (e.g. conditioning dropout); costs a graph walk."""
    best_by_loss: ClassVar[bool] = False
    """True where the pseudo-Dice slot holds minus the validation loss (generative tasks): the log says so."""
    has_previews: ClassVar[bool] = False
    """True for tasks that produce images: ``preview_panels`` gives them."""

    @classmethod
    def task_settings(cls, configuration: dict, name: str = "") -> TaskSettings:
        """The task's settings from a configuration of the plans, with the variant's changes applied."""
        return task_settings(configuration, cls.nnugen_task, cls.settings_changes, cls.__name__, name)

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> torch.nn.Module:
        """What nnU-Net's predictor calls on the class (it never creates the trainer): the task's model, built from
        the plans alone by nnugen/models/model_builders.py; nnU-Net's own network for a task without one."""
        if cls.nnugen_task not in MODEL_BUILDERS:
            return super().build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                      num_output_channels, enable_deep_supervision)
        configuration = configuration_manager.configuration
        spec = ModelSpec(cls.task_settings(configuration), section_of(configuration), num_input_channels,
                         num_output_channels, tuple(configuration_manager.patch_size))
        return build_model(cls.nnugen_task, spec)

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
            os.environ["nnUNet_wandb_enabled"] = "0"  # one W&B run, from rank 0 (the rank that writes files)
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.is_ddp:
            self.device = rank_device(device)  # nnU-Net 2.8.1 puts rank R on cuda:R, whatever the device and node
        self.settings = self.task_settings(self.configuration_manager.configuration, configuration)
        training, memory = self.settings.training, self.settings.memory
        self.num_epochs, self.save_every, self.keep_epochs = training.epochs, training.save_every, training.keep_epochs
        self.num_iterations_per_epoch = training.iterations_per_epoch * memory.grad_accumulation
        self.num_val_iterations_per_epoch = training.val_iterations_per_epoch
        self.initial_lr, self.weight_decay = training.initial_lr, training.weight_decay
        # nnU-Net reads the batch size from the configuration; the memory plan decides it for nnugen's tasks
        self.configuration_manager.configuration["batch_size"] = memory.batch_size
        self.amp_dtype = training_amp_dtype(self.device, memory.amp, self.print_to_log_file)
        self.grad_scaler = self.grad_scaler if self.amp_dtype == torch.float16 else None  # scaling is for fp16 only
        self.nonfinite = NonFiniteGuard(training.max_nonfinite_steps)
        self._micro_step, self._metrics = 0, EpochMetrics()
        self._nonfinite_before_epoch, self._applied_before_epoch, self._peak_reported = 0, 0, False
        self.progress_report = ProgressReport(self.output_folder, self.local_rank)
        flags = RunFlags.from_environment()  # nnugen_train's --seed, --progress, -pretrained_weights (run_flags.py)
        self.seed, self.show_progress, self.pretrained_weights = flags.seed, flags.progress, flags.pretrained_weights
        self.partition = flags.partition  # pieces per spatial axis of a patch split across the ranks, or None
        if self.seed is not None:
            seed_everything(self.seed + self.local_rank)

    def require_plain_labels(self, what: str) -> None:
        """ValueError for region-based labels or an ignore label, which one-hot diffusion cannot represent."""
        if self.label_manager.has_regions or self.label_manager.has_ignore_label:
            raise ValueError(f"{what}: region-based labels and ignore labels are not supported yet")

    def autocast(self):
        """The training precision's autocast (training_precision.py), for ``compute_loss`` and the like."""
        return training_autocast(self.device, self.amp_dtype)

    def _do_i_compile(self) -> bool:
        return False  # nnU-Net would wrap the whole model, sampler loop included; compile_networks decides instead

    def compile_networks(self) -> None:
        """nnugen's compile policy (compile_policy.py): only the networks inside the model, in place, before DDP."""
        apply_compile_policy(self.network, self.device, self.print_to_log_file)

    def initialize(self):
        # under DDP nnU-Net wraps the network with device_ids=[global rank] (CUDA, one node only): build everything
        # as one process, then split the batch across ranks, rebuild the loss and wrap here (ddp.py)
        is_ddp, self.is_ddp = self.is_ddp, False
        try:
            super().initialize()
        finally:
            self.is_ddp = is_ddp
        if self.pretrained_weights:  # before compiling and wrapping: the plain model's names
            taken = self.load_pretrained(self.network, self.pretrained_weights, self.num_input_channels)
            self.print_to_log_file(f"started from {self.pretrained_weights}: {taken} tensors of nnU-Net's network")
        self.compile_networks()
        self.network = self.training_network(self.network)
        if self.is_ddp and self.partition:
            self.partition_over_ranks()
        elif self.is_ddp:
            split_over_ranks(self)

    def partition_over_ranks(self) -> None:
        """``--partition``: the ranks train one batch together, the task's network on one block of the patch per
        rank (spatial_training.py)."""
        network = self.partitioned_network()
        patch = tuple(self.configuration_manager.patch_size)
        strides = getattr(network, "strides", None) or self.configuration_manager.network_arch_init_kwargs["strides"]
        self.network = spatial_domain(self.network, network, self.partition, patch, strides, self.device)
        self.print_to_log_file(describe(self.partition, patch, self.configuration_manager.batch_size,
                                        type(network).__name__))

    def partitioned_network(self) -> torch.nn.Module:
        """The network ``--partition`` runs on blocks of the patch: called with the whole patch as its first argument
        in training, its outputs the whole patch's. nnU-Net's network here; a task whose model wraps a denoiser
        returns it, and a task that cannot be partitioned raises ValueError."""
        if self.nnugen_task in MODEL_BUILDERS:
            raise ValueError(f"--partition is not built for {type(self).__name__} yet; it trains --task baseline, seg "
                             "and ddpm")
        return self.network

    @classmethod
    def load_pretrained(cls, network: torch.nn.Module, filename: str, image_channels: int) -> int:
        """Put a trained nnU-Net's weights (``-pretrained_weights``) into the task's network; returns the number of
        tensors taken. nnU-Net's own network takes them by name (pretrained_start.py); a task whose model extends it
        maps them (NnugenDiffSegTrainer); the others cannot start from it. Also nnugen_train's check at the door."""
        if cls.nnugen_task in MODEL_BUILDERS:
            raise ValueError(f"{cls.__name__} cannot start from nnU-Net weights; -pretrained_weights works with "
                             f"--task {' and '.join(PRETRAINED_TASKS)}")
        return load_into_nnunet_network(network, nnunet_weights(filename), filename)

    def training_network(self, network: torch.nn.Module) -> torch.nn.Module:
        """The module training calls, and DDP wraps: the model itself, unless its forward is not the loss."""
        return network

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        setup = spatial_setup(self.settings.training.augmentation,
                              super().configure_rotation_dummyDA_mirroring_and_inital_patch_size(),
                              self.configuration_manager.patch_size)
        self.inference_allowed_mirroring_axes = setup[3]  # the predictor mirrors only where training did
        return setup

    def get_training_transforms(self, patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, use_mask_for_norm=None, is_cascaded=False,
                                foreground_labels=None, regions=None, ignore_label=None):
        labels = dict(is_cascaded=is_cascaded, foreground_labels=foreground_labels, regions=regions,
                      ignore_label=ignore_label)
        return training_transforms(
            self.settings.training.augmentation,
            lambda: super(NnugenTrainer, self).get_training_transforms(
                patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes, do_dummy_2d_data_aug,
                use_mask_for_norm, **labels),
            lambda: self.get_validation_transforms(deep_supervision_scales, **labels), mirror_axes)

    def get_dataloaders(self):
        train, val = super().get_dataloaders()
        if self.seed is None:
            return train, val
        return tuple(seeded_augmenter(augmenter, self.seed, self.local_rank, stream, self.current_epoch)
                     for augmenter, stream in ((train, "train"), (val, "val")))

    def log_metric(self, name: str, value: float | torch.Tensor) -> None:
        """One value of an extra metric, e.g. a loss part. Its mean over the epoch's steps (and ranks) goes to the
        training log and to W&B as ``train/NAME`` (network in training mode) or ``val/NAME``."""
        phase = "train" if self.network.training else "val"
        self._metrics.add(f"{phase}/{name}", value.detach().float().item() if torch.is_tensor(value) else value)

    def configure_optimizers(self):
        if self.settings.training.optimizer == "adamw":
            optimizer = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
            return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, exponent=0.0)
        return super().configure_optimizers()

    def compute_loss(self, data: torch.Tensor, target: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch; subclasses replace this (nnU-Net's segmentation loss by default)."""
        return self.loss(self.network(data), target)

    def on_train_start(self):
        super().on_train_start()
        if self.local_rank == 0:  # also when a kill tore the first checkpoint write and --c found none to resume
            log_task_summary(self.print_to_log_file, self.plans_manager.plans, self.dataset_json,
                             self.configuration_name, self.nnugen_task, self.settings)  # torchinfo (model_summary.py)
            for name in remove_torn_writes(self.output_folder):
                self.print_to_log_file(f"removed {name}, left by a checkpoint write that was interrupted")
            if self.show_progress:
                self.progress_report.open_bar(self.training_progress())

    def _save_debug_information(self):
        """nnU-Net's ``debug.json`` with its folders written as ``$nnUNet_results/...``: export copies it, and a shared
        model names no folder of this machine (folders/portable_paths.py)."""
        from nnugen.folders.portable_paths import make_portable

        super()._save_debug_information()
        if self.local_rank == 0 and os.path.isfile(os.path.join(self.output_folder, "debug.json")):
            make_portable(os.path.join(self.output_folder, "debug.json"))

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

    def perform_actual_validation(self, save_probabilities: bool = False):
        """nnU-Net's validation, then HD95 / NSD beside its ``validation/summary.json`` (surface_distances.py)."""
        from nnugen.evaluation.surface_distances import write_validation_distances
        from nnugen.folders.portable_paths import make_validation_portable

        super().perform_actual_validation(save_probabilities)
        write_validation_distances(self)
        if self.local_rank == 0:  # export copies summary.json: case files as $nnUNet_results/... (portable_paths.py)
            make_validation_portable(self.output_folder)

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

    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank == 0 and self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
        elif self.local_rank == 0:
            save_nnunet_checkpoint(self, filename)

    def extra_checkpoint_state(self) -> dict:
        """Further entries for the checkpoint (EMA weights, a discriminator ...); restored in ``load_checkpoint``."""
        return {}

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        if not self.was_initialized:
            self.initialize()
        checkpoint = filename_or_checkpoint
        if isinstance(checkpoint, str):
            checkpoint = load_nnunet_checkpoint(checkpoint, self.device)
        try:
            restore_nnunet_checkpoint(self, checkpoint)
        except (KeyError, RuntimeError, TypeError, ValueError) as error:
            raise CheckpointError(f"the checkpoint does not fit this trainer or plan ({str(error).splitlines()[0]}); "
                                  "train again or pick the matching -tr / -p / configuration") from None
        self.restore_extra_checkpoint_state(checkpoint)

    def restore_extra_checkpoint_state(self, checkpoint: dict) -> None:
        """Counterpart of ``extra_checkpoint_state``."""
