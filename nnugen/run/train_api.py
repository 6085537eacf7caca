"""``train``: the Python API behind ``nnugen_train``. It runs nnU-Net's own training run (``run_training``: the same
folds, data loader, logging, checkpoints and final validation) with ``-p PLANS`` (default nnugenPlans) and the task's
trainer; ``-num_gpus N`` is nnU-Net's single-node DDP. Under ``torchrun`` every process runs one rank instead
(distributed.py). For several ranks the batch and accumulation are planned for the world size (world_batch.py), and
more ranks than visible GPUs are refused before anything runs."""

from __future__ import annotations

import math
import os
import sys
import warnings
from dataclasses import dataclass, replace

from nnugen import PLANS_IDENTIFIER
from nnugen.config import configuration_name, section_of
from nnugen.run.distributed import (
    TorchrunRank,
    check_torchrun_device,
    cpu_threads_per_rank,
    torchrun_rank,
    train_under_torchrun,
)
from nnugen.run.ext_trainer_path import ensure_ext_trainer_path
from nnugen.run_flags import RunFlags, progress_wanted
from nnugen.tasks import task_named


@dataclass(frozen=True)
class TrainRequest:
    dataset: str
    fold: str
    configuration: str
    task: str = "seg"
    device: str = "cuda"
    continue_training: bool = False
    num_gpus: int = 1
    seed: int | None = None
    progress: bool | None = None
    """The progress bar: True / False, or None for one when stdout is a terminal (run_flags.progress_wanted)."""
    plans: str = PLANS_IDENTIFIER
    """nnU-Net's plans identifier (``-p``): the plans file in nnUNet_preprocessed and the model folder's middle part."""
    only_validation: bool = False
    save_probabilities: bool = False
    pretrained_weights: str | None = None
    """A trained nnU-Net's checkpoint to start from (nnU-Net's ``-pretrained_weights``); seg and baseline only."""
    partition: tuple[int, ...] | None = None
    """Pieces per spatial axis of each patch, one block per torchrun process (``--partition``): baseline, seg, ddpm."""


def check_request(request: TrainRequest) -> tuple[str, str]:
    """Validate before anything is written; returns (configuration name, trainer name)."""
    from nnugen.devices import check_device_name
    from nnugen.folders.dataset_folders import load_json, preprocessed_folder

    task = task_named(request.task)
    if request.fold != "all" and not request.fold.isdigit():
        raise ValueError(f"fold '{request.fold}' must be an integer (0-4 for nnU-Net's 5 folds) or 'all'")
    check_device_name(request.device)
    if request.continue_training and request.only_validation:
        raise ValueError("--c and --val exclude each other: --c continues training, --val only validates")
    if request.num_gpus < 1:
        raise ValueError(f"-num_gpus {request.num_gpus}: must be at least 1")
    rank = torchrun_rank()
    if rank is not None:
        if request.num_gpus != 1:
            raise ValueError(f"-num_gpus {request.num_gpus} under torchrun: torchrun starts the processes already; "
                             "drop -num_gpus and set torchrun's --nproc_per_node")
        check_torchrun_device(request.device)
    elif request.num_gpus > 1 and request.device != "cuda":
        raise ValueError(f"-num_gpus {request.num_gpus} is nnU-Net's multi-GPU training and needs -device cuda; for "
                         f"several CPU processes run torchrun --nproc_per_node {request.num_gpus} "
                         "$(which nnugen_train) ... -device cpu")
    check_visible_gpus(request, rank)
    configuration = configuration_name(request.configuration)
    hint = (f"run nnugen_plan -d {request.dataset} first" if request.plans == PLANS_IDENTIFIER else
            f"check -p {request.plans} (nnugen_plan writes {PLANS_IDENTIFIER}.json)")
    plans = load_json(preprocessed_folder(request.dataset) / f"{request.plans}.json", hint)
    if configuration not in plans.get("configurations", {}):
        raise ValueError(f"configuration '{configuration}' is not in {request.plans}.json; it has "
                         f"{', '.join(plans.get('configurations', {}))}")
    settings = section_of(plans["configurations"][configuration], configuration).task(task.section)
    world_size = rank.world_size if rank is not None else request.num_gpus
    planned = settings.memory.planned_partition
    if request.partition is None and planned is not None and not request.only_validation:  # --val: whole cases
        check_planned_partition(request, task.section, planned, settings.memory.budget_gb,
                                world_size if rank is not None else None)
        request = replace(request, partition=planned)
    if request.partition is not None:
        check_partition_request(request, task.section, plans, configuration, world_size if rank is not None else None)
    elif world_size > 1:  # the trainer applies this plan; here only what it cannot satisfy stops the launch
        from nnugen.trainers.world_batch import plan_world_batch

        plan_world_batch(settings.memory.batch_size, settings.memory.grad_accumulation, world_size)
    if request.continue_training:
        check_resume_checkpoint(request, configuration, task.trainer, max(world_size, 1))
    if request.only_validation:
        check_final_checkpoint(request, configuration, task.trainer)
    if request.pretrained_weights is not None:
        check_pretrained_weights(request, task.trainer, plans, configuration)
    if task.section == "anomaly" and not request.only_validation:
        from nnugen.trainers.healthy_split import check_healthy_training_cases

        check_healthy_training_cases(plans["dataset_name"], _data_identifier(plans, configuration), request.fold,
                                     settings.anomaly.healthy_cases_file)
    return configuration, task.trainer


PARTITIONED_TASKS = ("baseline", "seg", "ddpm")
"""The tasks whose training ``--partition`` runs (their trainers' ``partitioned_network``)."""


def check_planned_partition(request: TrainRequest, section: str, planned: tuple[int, ...], budget_gb: float,
                            world_size: int | None) -> None:
    """A task the plan partitions (batch 1 of its patch does not fit the budget whole) trains under torchrun with one
    process per block, unless ``--partition`` says otherwise; ValueError saying how to start it."""
    blocks = math.prod(planned)
    if world_size == blocks:
        return
    running = "one process" if world_size is None else f"{world_size} process(es)"
    raise ValueError(
        f"the plan splits each {request.task} patch into {blocks} blocks ({section}.memory.partition "
        f"{list(planned)}: batch 1 does not fit {budget_gb:g} GB whole) and this is {running}: start "
        f"torchrun --nproc_per_node {blocks} $(which nnugen_train) ..., or re-plan with a larger --gpu-memory-gb "
        f"(or --set {section}.memory.partition=[] to train the whole patch)")


def check_partition_request(request: TrainRequest, section: str, plans: dict, configuration: str,
                            world_size: int | None) -> None:
    """``--partition`` is refused before anything runs outside torchrun, for a task it does not train, without
    PhysicsNeMo, or with pieces the planned patch and network cannot take (networks/spatial_partition.py)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnugen.networks.spatial_partition import check_partition, domain_parallel

    if world_size is None:
        raise ValueError("--partition splits each patch across the processes of a torchrun job; start it with torchrun "
                         "--nproc_per_node N $(which nnugen_train) ... (N the product of the pieces)")
    if request.task not in PARTITIONED_TASKS:
        raise ValueError(f"--partition trains --task {', '.join(PARTITIONED_TASKS)} for now, not --task {request.task}")
    manager = PlansManager(plans).get_configuration(configuration)
    strides = manager.network_arch_init_kwargs["strides"]
    if section != "baseline":  # the denoiser's own plan
        settings_of = section_of(manager.configuration, configuration).task(section)
        denoiser = settings_of.denoiser
        strides = denoiser.strides
        if section == "segmentation" and settings_of.diffusion.deep_supervision:
            raise ValueError("--partition: the denoiser's deep supervision (diffusion.deep_supervision) bypasses the "
                             "partitioned forward; plan the segmentation task without it")
        if denoiser.attention_stages and request.device != "cuda":
            raise ValueError(f"--partition on -device {request.device}: the {request.task} denoiser has attention "
                             f"(stages {', '.join(map(str, denoiser.attention_stages))}), whose partitioned form needs "
                             f"CUDA; plan it without: nnugen_plan ... --set {section}.denoiser.attention_stages=[]")
    check_partition(request.partition, manager.patch_size, strides, world_size)
    domain_parallel()


def check_visible_gpus(request: TrainRequest, rank: TorchrunRank | None) -> None:
    """ValueError when a multi-GPU launch on -device cuda asks for more processes on this machine than it sees GPUs
    (each process needs its own GPU: ``cuda:LOCAL_RANK``)."""
    if request.device != "cuda":
        return
    if rank is None:
        wanted, flag = request.num_gpus, "-num_gpus"
    else:
        wanted, flag = int(os.environ.get("LOCAL_WORLD_SIZE") or rank.local_rank + 1), "torchrun's --nproc_per_node"
    if wanted == 1:
        return
    import torch

    visible = torch.cuda.device_count()
    if wanted > visible:
        fix = (f"set {flag} to {visible} or fewer" if visible else
               "train where GPUs are visible, or on the CPU with torchrun ... -device cpu")
        raise ValueError(f"{flag} {wanted} needs {wanted} GPUs but this machine shows {visible} (check "
                         f"CUDA_VISIBLE_DEVICES); {fix}")


def check_pretrained_weights(request: TrainRequest, trainer: str, plans: dict, configuration: str) -> None:
    """``-pretrained_weights`` is refused before anything runs unless the checkpoint's network loads into the planned
    one (the trainer's ``load_pretrained``, on a network built from the plans as the trainer will build it)."""
    from nnugen.trainers.pretrained_start import PRETRAINED_TASKS

    if request.task not in PRETRAINED_TASKS:
        raise ValueError(f"-pretrained_weights works with --task {' and '.join(PRETRAINED_TASKS)} (nnU-Net's network "
                         f"or its exact extension), not --task {request.task}")
    if request.continue_training or request.only_validation:
        raise ValueError("-pretrained_weights starts a new training; drop it with --c or --val (as in nnU-Net)")
    if not os.path.isfile(request.pretrained_weights):
        raise ValueError(f"-pretrained_weights {request.pretrained_weights}: no such file; give a trained nnU-Net's "
                         "checkpoint, e.g. .../nnUNetTrainer__nnUNetPlans__3d_fullres/fold_0/checkpoint_final.pth")
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnugen.folders.dataset_folders import load_json, preprocessed_folder
    from nnugen.nnunet_ext import nnugen_trainers

    dataset_json = load_json(preprocessed_folder(request.dataset) / "dataset.json",
                             "run nnUNetv2_plan_and_preprocess first")
    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(configuration)
    channels = determine_num_input_channels(plans_manager, configuration_manager, dataset_json)
    outputs = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    trainer_class = getattr(nnugen_trainers, trainer)
    network = trainer_class.build_network_architecture(plans_manager, configuration_manager, channels, outputs)
    trainer_class.load_pretrained(network, request.pretrained_weights, channels)


def _data_identifier(plans: dict, configuration: str) -> str:
    """The preprocessed data folder of a configuration (nnU-Net's ``inherits_from`` followed)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    return PlansManager(plans).get_configuration(configuration).data_identifier


def check_resume_checkpoint(request: TrainRequest, configuration: str, trainer: str, world_size: int) -> None:
    """A broken checkpoint that ``--c`` would load, or one that another number of processes trained, is refused
    here, before nnU-Net's run writes its training log."""
    from nnugen.folders.checkpoint_files import check_checkpoint_file, check_resume_world_size, resume_checkpoint
    from nnugen.folders.model_folder import ModelFolder

    if not os.environ.get("nnUNet_results"):
        return  # nnU-Net reports the missing variable itself
    folder = ModelFolder.of(request.dataset, trainer, configuration, request.plans)
    checkpoint = resume_checkpoint(str(folder.fold("all" if request.fold == "all" else int(request.fold))))
    if checkpoint is not None:
        check_checkpoint_file(checkpoint)
        check_resume_world_size(checkpoint, world_size)


def check_final_checkpoint(request: TrainRequest, configuration: str, trainer: str) -> None:
    """``--val`` validates the fold's checkpoint_final.pth: a fold that never finished training is refused here,
    before nnU-Net's run creates the fold folder (and fails with a traceback)."""
    from nnugen.folders.checkpoint_files import check_checkpoint_file
    from nnugen.folders.model_folder import ModelFolder

    if not os.environ.get("nnUNet_results"):
        return  # nnU-Net reports the missing variable itself
    folder = ModelFolder.of(request.dataset, trainer, configuration, request.plans)
    checkpoint = folder.checkpoint("all" if request.fold == "all" else int(request.fold))
    if not checkpoint.is_file():
        raise ValueError(f"--val: {checkpoint} does not exist: fold {request.fold} has not finished training; train "
                         f"it first (nnugen_train {request.dataset} {request.fold} {request.configuration} --task "
                         f"{request.task}), or resume it with --c")
    check_checkpoint_file(str(checkpoint))


def train(request: TrainRequest) -> None:
    configuration, trainer = check_request(request)
    ensure_ext_trainer_path()
    pretrained = os.path.abspath(request.pretrained_weights) if request.pretrained_weights else None
    # the trainer's flags (run_flags.py)
    progress = progress_wanted(request.progress, sys.stdout)
    os.environ.update(RunFlags(request.seed, progress, pretrained, request.partition).environment())

    # nnU-Net's trainer lookup imports timm, whose hrnet module warns about torch.jit.interface on every run: noise
    # on stderr that is neither nnugen's nor the user's to fix
    warnings.filterwarnings("ignore", message="`torch.jit.interface` is deprecated", category=FutureWarning)
    import torch
    from nnunetv2.run.run_training import run_training

    if request.device == "cpu":
        torch.set_num_threads(cpu_threads_per_rank())
    elif request.device == "cuda":
        torch.set_num_threads(1)
        torch.set_num_interop_threads(1)
    if torchrun_rank() is not None:
        train_under_torchrun(request.dataset, configuration, request.fold, trainer, request.plans, request.device,
                             request.continue_training, request.only_validation, request.save_probabilities)
        return
    run_training(request.dataset, configuration, request.fold, trainer, request.plans,
                 num_gpus=request.num_gpus, export_validation_probabilities=request.save_probabilities,
                 continue_training=request.continue_training, only_run_validation=request.only_validation,
                 device=torch.device(request.device))
