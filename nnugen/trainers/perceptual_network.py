"""Where the autoencoder's perceptual loss gets its features, offline. MONAI's perceptual networks download weights
at run time, so nnugen uses a network trained on the same dataset (an nnU-Net model folder: its encoder) or a
TorchScript file the user gives, and never downloads. ``autoencoder.perceptual_network``:

- ``""`` (default, "auto"): the dataset's own segmentation model of the same configuration and fold if it is
  trained (NnugenBaselineTrainer with nnugenPlans, else nnUNetTrainer with nnUNetPlans), else no perceptual loss;
- a folder: an nnU-Net model folder (with plans.json and fold_F/checkpoint_final.pth, or the fold folder itself);
- a file: a TorchScript feature extractor (``torch.jit.save``) whose output is the feature maps;
- ``"none"``: no perceptual loss.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from nnugen.losses.perceptual import FeaturePerceptualLoss


def _model_fold(folder: Path, fold: int | str) -> Path | None:
    for candidate in (folder, folder / f"fold_{fold}"):
        if (candidate / "checkpoint_final.pth").is_file() and (candidate.parent / "plans.json").is_file():
            return candidate
    return None


def find_segmentation_model(results: Path, dataset_name: str, configuration: str, fold: int | str) -> Path | None:
    for trainer, plans in (("NnugenBaselineTrainer", "nnugenPlans"), ("nnUNetTrainer", "nnUNetPlans")):
        found = _model_fold(results / dataset_name / f"{trainer}__{plans}__{configuration}", fold)
        if found is not None:
            return found
    return None


def nnunet_encoder(fold_folder: Path) -> torch.nn.Module:
    """The encoder of a trained nnU-Net model (its plans' network, loaded from checkpoint_final.pth)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager(json.loads((fold_folder.parent / "plans.json").read_text()))
    dataset_json = json.loads((fold_folder.parent / "dataset.json").read_text())
    # nnU-Net's own checkpoint format pickles plans and logger values, which forces weights_only=False (DESIGN.md)
    checkpoint = torch.load(fold_folder / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    configuration = plans.get_configuration(checkpoint["init_args"]["configuration"])
    network = get_network_from_plans(
        configuration.network_arch_class_name, configuration.network_arch_init_kwargs,
        configuration.network_arch_init_kwargs_req_import,
        determine_num_input_channels(plans, configuration, dataset_json),
        plans.get_label_manager(dataset_json).num_segmentation_heads, allow_init=False, deep_supervision=False)
    network.load_state_dict(checkpoint["network_weights"])
    return network.encoder


def perceptual_loss(setting: str, results: Path | None, dataset_name: str, configuration: str, fold: int | str,
                    preprocess: Callable[[Tensor], Tensor], log: Callable[[str], None]) -> FeaturePerceptualLoss | None:
    """The perceptual loss the setting asks for, or None; ``log`` says which network is used."""
    if setting == "none":
        log("perceptual loss: off (autoencoder.perceptual_network = none)")
        return None
    if setting == "":
        found = find_segmentation_model(results, dataset_name, configuration, fold) if results else None
        if found is None:
            log("perceptual loss: off - no trained segmentation model of this dataset, configuration and fold was "
                "found (train nnugen_train ... --task baseline first, or set autoencoder.perceptual_network)")
            return None
        log(f"perceptual loss: features of the dataset's own nnU-Net encoder, {found}")
        return FeaturePerceptualLoss(nnunet_encoder(found), preprocess=preprocess)
    path = Path(setting)
    if path.is_dir():
        fold_folder = _model_fold(path, fold)
        if fold_folder is None:
            raise ValueError(f"autoencoder.perceptual_network {path} is not an nnU-Net model folder with "
                             f"fold_{fold}/checkpoint_final.pth; train it or point to another folder")
        log(f"perceptual loss: features of the nnU-Net encoder in {fold_folder}")
        return FeaturePerceptualLoss(nnunet_encoder(fold_folder), preprocess=preprocess)
    log(f"perceptual loss: TorchScript feature extractor {path}")
    return FeaturePerceptualLoss.from_torchscript(path, preprocess=preprocess)
