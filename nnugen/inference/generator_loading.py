"""Finding and loading a trained generator for ``nnugen_sample``: the model folder
``nnUNet_results/DatasetX/<Trainer>__nnugenPlans__<CONFIG>/fold_F``, its plans.json and dataset.json, the checkpoint
in nnU-Net's format, and the network built by the trainer class's own ``build_network_architecture`` from those
plans (as nnU-Net's predictor builds it). nnU-Net's predictor itself is not used: generation has no input images to
preprocess, tile or export."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

from nnugen import PLANS_IDENTIFIER
from nnugen.config import CONFIGURATION_ALIASES, TaskSettings

GENERATOR_TASKS = {"ddpm": "NnugenDDPMTrainer", "adapter": "NnugenDDPMTrainer_labelAdapter", "ldm": "NnugenLDMTrainer"}
"""``--task`` -> the trainer whose model folder and checkpoint nnugen_sample reads."""

_TRAINER_MODULES = {"NnugenDDPMTrainer": "nnugen.trainers.nnugen_ddpm_trainer",
                    "NnugenDDPMTrainer_labelAdapter": "nnugen.trainers.variants.ddpm_label_adapter",
                    "NnugenLDMTrainer": "nnugen.trainers.nnugen_ldm_trainer"}
"""Generator trainers built in this version, and where they live."""


@dataclass(frozen=True)
class ModelFiles:
    """The files of one trained fold, resolved and checked to exist; plans and dataset.json already read."""

    fold_folder: Path
    checkpoint: Path
    trainer_name: str
    configuration: str
    plans: dict
    dataset_json: dict

    @property
    def model_folder(self) -> Path:
        return self.fold_folder.parent

    @property
    def dataset_name(self) -> str:
        return self.model_folder.parent.name


def check_generator_task(task: str) -> str:
    """The trainer name of a generation task; ValueError for an unknown task or one not built in this version."""
    if task not in GENERATOR_TASKS:
        raise ValueError(f"--task {task}: choose one of {', '.join(GENERATOR_TASKS)}")
    trainer = GENERATOR_TASKS[task]
    if trainer not in _TRAINER_MODULES:
        built = ", ".join(t for t, name in GENERATOR_TASKS.items() if name in _TRAINER_MODULES)
        raise ValueError(f"--task {task}: {trainer} is not built in this nnugen version yet, so there is no such model "
                         f"to sample from; available: {built}")
    return trainer


def find_model_files(dataset: str, configuration: str, task: str, fold: str, checkpoint: str) -> ModelFiles:
    """Resolve ``nnUNet_results/DatasetX/<Trainer>__nnugenPlans__<CONFIG>/fold_F/<checkpoint>`` and read the model
    folder's plans.json and dataset.json; one-line ValueErrors naming the missing path and what to do."""
    from nnugen_planner.dataset_files import dataset_name, load_json

    trainer = check_generator_task(task)
    configuration = CONFIGURATION_ALIASES.get(configuration, configuration)
    if fold != "all" and not str(fold).isdigit():
        raise ValueError(f"-f {fold}: a fold is an integer (0-4 for nnU-Net's 5 folds) or 'all'")
    results = os.environ.get("nnUNet_results")
    if not results:
        raise ValueError("nnUNet_results is not set; export it as for nnUNetv2_train")
    model_folder = Path(results) / dataset_name(dataset) / f"{trainer}__{PLANS_IDENTIFIER}__{configuration}"
    train_hint = f"train it first: nnugen_train {dataset} {fold} {configuration} --task {task}"
    if not model_folder.is_dir():
        raise ValueError(f"model folder {model_folder} does not exist; {train_hint}")
    fold_folder = model_folder / f"fold_{fold}"
    if not (fold_folder / checkpoint).is_file():
        raise ValueError(f"{fold_folder / checkpoint} does not exist; {train_hint} (or pick another -f / -chk)")
    hint = "this is not a complete model folder of nnU-Net's training; train again"
    plans = load_json(model_folder / "plans.json", hint)
    dataset_json = load_json(model_folder / "dataset.json", hint)
    if configuration not in plans.get("configurations", {}):
        raise ValueError(f"configuration '{configuration}' is not in {model_folder / 'plans.json'}")
    return ModelFiles(fold_folder, fold_folder / checkpoint, trainer, configuration, plans, dataset_json)


def torch_device(name: str):
    """``-device`` -> torch.device; ValueError when that device is not there."""
    import torch

    if name not in ("cuda", "cpu", "mps"):
        raise ValueError(f"-device {name}: choose cuda, cpu or mps")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("-device cuda: no CUDA GPU is visible; use -device cpu (or mps on Apple silicon)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("-device mps: MPS is not available here; use -device cpu")
    return torch.device(name)


def task_settings(files: ModelFiles) -> TaskSettings:
    """The generator's settings (mode, sampler, ...) from the model folder's plans, variant changes applied."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    configuration = PlansManager(files.plans).get_configuration(files.configuration).configuration
    return _trainer_class(files.trainer_name).task_settings(configuration, files.configuration)


def load_generator(files: ModelFiles, device):
    """The trained ``ImageGenerator`` in eval mode on ``device``, with the checkpoint's weights (EMA included).
    ValueError when the checkpoint was written by another trainer or does not fit the plans' network."""
    import torch
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnugen.trainers.checkpoint_files import load_nnunet_checkpoint

    # nnU-Net's checkpoint format pickles the plans and the logger's values, so it only loads with
    # weights_only=False (as nnU-Net's own predictor loads it); load_nnunet_checkpoint does that, on the CPU
    checkpoint = load_nnunet_checkpoint(str(files.checkpoint), device=torch.device("cpu"))
    found = checkpoint.get("trainer_name")
    if found != files.trainer_name:
        raise ValueError(f"{files.checkpoint} was written by {found}, not {files.trainer_name}: it is not a model "
                         f"nnugen_sample can sample from with this --task")
    plans_manager = PlansManager(files.plans)
    configuration_manager = plans_manager.get_configuration(files.configuration)
    label_manager = plans_manager.get_label_manager(files.dataset_json)
    network = _trainer_class(files.trainer_name).build_network_architecture(
        plans_manager, configuration_manager,
        determine_num_input_channels(plans_manager, configuration_manager, files.dataset_json),
        label_manager.num_segmentation_heads, enable_deep_supervision=False)
    expected = network.state_dict().keys()
    weights = {k[7:] if k not in expected and k.startswith("module.") else k: v
               for k, v in checkpoint["network_weights"].items()}
    try:
        network.load_state_dict(weights)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise ValueError(f"the weights in {files.checkpoint} do not fit the network its plans.json describes "
                         f"({first}); was plans.json changed after training?") from None
    if files.trainer_name == "NnugenLDMTrainer":
        network = _latent_generator(network, files, configuration_manager)
    return network.to(device).eval()


def _latent_generator(latent_model, files: ModelFiles, configuration_manager):
    """Wrap the latent denoiser with the frozen autoencoder (weights only) and the scale found in training."""
    import json

    from nnugen.config import section_of
    from nnugen.models.autoencoder_files import load_autoencoder
    from nnugen.models.latent_generator import LatentGenerator

    latent_file = files.fold_folder / "latent.json"
    if not latent_file.is_file():
        raise ValueError(f"{latent_file} is missing: the latent model's training did not finish its start; train again")
    latent = json.loads(latent_file.read_text())
    autoencoder, _ = load_autoencoder(Path(latent["autoencoder_folder"]))
    chunks = section_of(configuration_manager.configuration).task("autoencoder").autoencoder.decode_chunks
    return LatentGenerator(latent_model, autoencoder, float(latent["scale_factor"]), chunks)


def _trainer_class(name: str):
    return getattr(importlib.import_module(_TRAINER_MODULES[name]), name)
