"""Offline feature vectors for the Fréchet distance and MMD: the encoder of the dataset's own trained nnU-Net (found
and loaded by ``nnugen.models.nnunet_encoder``, as for the autoencoder's perceptual loss), applied to images
normalised as nnU-Net's preprocessing normalises them; each stage's output is averaged over space and the stage
vectors are concatenated, ``(N, sum of the stage widths)``. Nothing is downloaded: without a trained segmentation
model of the dataset there are no features, and the error says which model to train."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from nnugen.models.nnunet_encoder import find_segmentation_model, nnunet_encoder


class EncoderFeatures:
    """``features(images)``: ``(N, C, *spatial)`` images in nnU-Net's normalised intensities -> ``(N, F)``."""

    def __init__(self, fold_folder: Path, device: torch.device | str = "cpu") -> None:
        self.fold_folder = Path(fold_folder)
        self.device = torch.device(device)
        self.encoder = nnunet_encoder(self.fold_folder).to(self.device).eval()

    @classmethod
    def of_dataset(cls, results: Path, dataset_name: str, configuration: str, fold: int | str = 0,
                   device: torch.device | str = "cpu") -> EncoderFeatures:
        found = find_segmentation_model(Path(results), dataset_name, configuration, fold)
        if found is None:
            raise ValueError(f"no trained segmentation model of {dataset_name} ({configuration}, fold {fold}) gives "
                             f"features; train one first: nnugen_train {dataset_name} {fold} {configuration} "
                             "--task baseline")
        return cls(found, device)

    @torch.no_grad()
    def features(self, images: Tensor, batch: int = 4) -> Tensor:
        vectors = []
        for start in range(0, images.shape[0], batch):
            stages = self.encoder(images[start:start + batch].float().to(self.device))
            stages = [stages] if isinstance(stages, Tensor) else stages
            vectors.append(torch.cat([s.flatten(2).mean(dim=2) for s in stages], dim=1).cpu())
        return torch.cat(vectors)


def nnunet_normalised(image: np.ndarray, plans: dict, configuration: str) -> np.ndarray:
    """``image`` (C, *spatial) in original units -> nnU-Net's normalised intensities, channel by channel, with the
    configuration's normalisation schemes and the plans' foreground intensity statistics (as its preprocessor)."""
    import nnunetv2
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(plans)
    settings = manager.get_configuration(configuration)
    out = np.empty(image.shape, dtype=np.float32)
    folder = str(Path(nnunetv2.__path__[0]) / "preprocessing" / "normalization")
    for c in range(image.shape[0]):
        scheme = recursive_find_python_class(folder, settings.normalization_schemes[c],
                                             "nnunetv2.preprocessing.normalization")
        normaliser = scheme(use_mask_for_norm=settings.use_mask_for_norm[c],
                            intensityproperties=manager.foreground_intensity_properties_per_channel[str(c)])
        out[c] = normaliser.run(image[c].astype(np.float32), np.zeros(image.shape[1:], dtype=np.int8))
    return out
