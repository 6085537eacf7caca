"""Where the autoencoder's perceptual loss gets its features, offline. MONAI's perceptual networks download weights
at run time, so nnugen uses a network trained on the same dataset (an nnU-Net model folder: its encoder) or a
TorchScript file the user gives, and never downloads. ``autoencoder.perceptual_network``:

- ``""`` (default, "auto"): the dataset's own segmentation model of the same configuration and fold if it is
  trained (NnugenBaselineTrainer with nnugenPlans, else nnUNetTrainer with nnUNetPlans; found and loaded by
  ``nnugen.models.nnunet_encoder``), else no perceptual loss;
- a folder: an nnU-Net model folder (with plans.json and fold_F/checkpoint_final.pth, or the fold folder itself);
- a file: a TorchScript feature extractor (``torch.jit.save``) whose output is the feature maps;
- ``"none"``: no perceptual loss.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import Tensor

from nnugen.folders.model_folder import fold_name
from nnugen.losses.perceptual import FeaturePerceptualLoss
from nnugen.models.nnunet_encoder import find_segmentation_model, nnunet_encoder, trained_fold


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
        fold_folder = trained_fold(path, fold)
        if fold_folder is None:
            raise ValueError(f"autoencoder.perceptual_network {path} is not an nnU-Net model folder with "
                             f"{fold_name(fold)}/checkpoint_final.pth; train it or point to another folder")
        log(f"perceptual loss: features of the nnU-Net encoder in {fold_folder}")
        return FeaturePerceptualLoss(nnunet_encoder(fold_folder), preprocess=preprocess)
    log(f"perceptual loss: TorchScript feature extractor {path}")
    return FeaturePerceptualLoss.from_torchscript(path, preprocess=preprocess)
