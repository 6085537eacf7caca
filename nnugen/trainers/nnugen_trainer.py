"""``NnugenTrainer``: what every nnugen trainer shares, as overrides of nnU-Net's hooks.

Here: run length, optimiser, batch size, gradient accumulation, AMP dtype (training_precision.py) and checkpoint
interval from the task's settings in the plans' ``nnugen`` section (``nnugen_task`` names the task); the model built
from the plans alone (model_builders.py); ``-pretrained_weights``; ``torch.compile`` by nnugen's policy
(compile_policy.py: only the model's networks, in place, never nnU-Net's whole-model wrap around the sampler loop);
DDP on any backend and node count (ddp.py, world_batch.py: the rank's device follows ``LOCAL_RANK``, rank 0 writes)
or one patch split across the ranks (``--partition``, spatial_training.py); ``training.augmentation`` (nnU-Net's,
mirroring only, or none: training_augmentation.py) with seeded augmentation workers read in order
(seeded_augmenter.py); HD95 / NSD beside nnU-Net's validation summary; portable ``debug.json``.

The rest, each in its own file, as nnU-Net hook overrides this class inherits:
- step_hooks.py: ``train_step`` (``compute_loss`` under AMP, non-finite losses and gradients skipped, accumulation);
- epoch_hooks.py: progress bar and ``training_progress.json``, epoch metrics, checkpoints before the log announces
  the epoch, previews, the final-weights check;
- checkpoint_hooks.py: atomic checkpoints with the task's extra state; a checkpoint that does not load, in one line.
"""

from __future__ import annotations

import math
import os
from typing import ClassVar

import torch
import torch.distributed as dist
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnugen.config import TaskSettings, section_of
from nnugen.models.compile_policy import apply_compile_policy
from nnugen.models.model_builders import MODEL_BUILDERS, ModelSpec, build_model
from nnugen.run_flags import RunFlags
from nnugen.seeding import seed_everything
from nnugen.tasks import task_settings
from nnugen.trainers.checkpoint_hooks import CheckpointHooks
from nnugen.trainers.ddp import rank_device, split_over_ranks
from nnugen.trainers.epoch_hooks import EpochHooks
from nnugen.trainers.epoch_metrics import EpochMetrics
from nnugen.trainers.nonfinite_guard import NonFiniteGuard
from nnugen.trainers.pretrained_start import PRETRAINED_TASKS, load_into_nnunet_network, nnunet_weights
from nnugen.trainers.progress_report import ProgressReport
from nnugen.trainers.seeded_augmenter import seeded_augmenter
from nnugen.trainers.spatial_training import describe, spatial_domain
from nnugen.trainers.step_hooks import TrainingStepHooks
from nnugen.trainers.training_augmentation import spatial_setup, training_transforms
from nnugen.trainers.training_precision import training_amp_dtype


class NnugenTrainer(TrainingStepHooks, EpochHooks, CheckpointHooks):
    nnugen_task = "baseline"
    settings_changes: ClassVar[dict] = {}
    """Changes a variant makes to the task's settings, e.g. ``{"diffusion": {"model_output": "eps"}}``."""
    ddp_find_unused_parameters: ClassVar[bool] = False
    """True for models with branches some steps leave unused (e.g. conditioning dropout); costs a graph walk."""

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
        # pieces per spatial axis of a patch split across the ranks (--partition, else the plan's), or None
        self.partition = flags.partition or memory.planned_partition
        if self.seed is not None:
            seed_everything(self.seed + self.local_rank)

    def require_plain_labels(self, what: str) -> None:
        """ValueError for region-based labels or an ignore label, which one-hot diffusion cannot represent."""
        if self.label_manager.has_regions or self.label_manager.has_ignore_label:
            raise ValueError(f"{what}: region-based labels and ignore labels are not supported yet")

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
        elif self.partition and math.prod(self.partition) > 1:
            # nnUNetv2_train without torchrun (nnugen_train refuses this at the door)
            self.print_to_log_file(f"the plan splits each patch into blocks {list(self.partition)} (memory.partition), "
                                   "but this run is one process: it trains the whole patch")

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

    def configure_optimizers(self):
        if self.settings.training.optimizer == "adamw":
            optimizer = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
            return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs, exponent=0.0)
        return super().configure_optimizers()

    def _save_debug_information(self):
        """nnU-Net's ``debug.json`` with its folders written as ``$nnUNet_results/...``: export copies it, and a shared
        model names no folder of this machine (folders/portable_paths.py)."""
        from nnugen.folders.portable_paths import make_portable

        super()._save_debug_information()
        if self.local_rank == 0 and os.path.isfile(os.path.join(self.output_folder, "debug.json")):
            make_portable(os.path.join(self.output_folder, "debug.json"))

    def do_split(self):
        """nnU-Net's split, its ``splits_final.json`` written whole first: under torchrun every rank splits at once,
        and nnU-Net's plain write lets a rank read a half-written file (crossval_split.py)."""
        from nnugen.trainers.crossval_split import write_missing_splits

        if self.fold != "all":
            write_missing_splits(self.preprocessed_dataset_folder_base, self.preprocessed_dataset_folder)
        return super().do_split()

    def perform_actual_validation(self, save_probabilities: bool = False):
        """nnU-Net's validation, then HD95 / NSD beside its ``validation/summary.json`` (surface_distances.py)."""
        from nnugen.evaluation.surface_distances import write_validation_distances
        from nnugen.folders.portable_paths import make_validation_portable

        super().perform_actual_validation(save_probabilities)
        write_validation_distances(self)
        if self.local_rank == 0:  # export copies summary.json: case files as $nnUNet_results/... (portable_paths.py)
            make_validation_portable(self.output_folder)
