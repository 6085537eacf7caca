"""The encoder of a trained nnU-Net segmentation model, offline: what the autoencoder's perceptual loss
(``nnugen.trainers.perceptual_network``) and the generation metrics' features (``nnugen.evaluation.encoder_features``)
compare images with. Found in nnU-Net's results layout (``nnugen.folders.model_folder``), built from the model
folder's plans and loaded from its ``checkpoint_final.pth`` (``nnugen.folders.checkpoint_files``)."""

from __future__ import annotations

from pathlib import Path

import torch

from nnugen import PLANS_IDENTIFIER
from nnugen.folders.checkpoint_files import load_nnunet_checkpoint
from nnugen.folders.dataset_folders import load_json
from nnugen.folders.model_folder import NOT_A_MODEL_FOLDER, ModelFolder
from nnugen.tasks import TASKS

CHECKPOINT = "checkpoint_final.pth"
SEGMENTATION_MODELS = ((TASKS["baseline"].trainer, PLANS_IDENTIFIER), ("nnUNetTrainer", "nnUNetPlans"))
"""(trainer, plans) of the segmentation models searched for a dataset, in order: nnugen's baseline, then nnU-Net's."""


def trained_fold(folder: Path, fold: int | str) -> Path | None:
    """The fold folder with ``checkpoint_final.pth`` of the model folder ``folder``, or ``folder`` itself if it is such
    a fold folder (its parent holding plans.json); None if neither."""
    folder = Path(folder)
    for candidate in (folder, ModelFolder(folder).fold(fold)):
        if (candidate / CHECKPOINT).is_file() and (candidate.parent / "plans.json").is_file():
            return candidate
    return None


def find_segmentation_model(results: Path, dataset_name: str, configuration: str, fold: int | str) -> Path | None:
    """The trained fold folder of the dataset's segmentation model of ``configuration`` under ``results`` (the first
    of SEGMENTATION_MODELS that has one), or None."""
    for trainer, plans in SEGMENTATION_MODELS:
        found = trained_fold(ModelFolder.of(dataset_name, trainer, configuration, plans, results=results).path, fold)
        if found is not None:
            return found
    return None


def nnunet_encoder(fold_folder: Path) -> torch.nn.Module:
    """The encoder of a trained nnU-Net model (its plans' network, loaded from checkpoint_final.pth), on the CPU."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    fold_folder = Path(fold_folder)
    plans = PlansManager(load_json(fold_folder.parent / "plans.json", NOT_A_MODEL_FOLDER))
    dataset_json = load_json(fold_folder.parent / "dataset.json", NOT_A_MODEL_FOLDER)
    checkpoint = load_nnunet_checkpoint(str(fold_folder / CHECKPOINT), torch.device("cpu"))
    configuration = plans.get_configuration(checkpoint["init_args"]["configuration"])
    network = get_network_from_plans(
        configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
        configuration.network_arch_init_kwargs_req_import,
        determine_num_input_channels(plans, configuration, dataset_json),
        plans.get_label_manager(dataset_json).num_segmentation_heads, allow_init=False, deep_supervision=False)
    network.load_state_dict(checkpoint["network_weights"])
    return network.encoder
