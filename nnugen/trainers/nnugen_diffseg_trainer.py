"""``NnugenDiffSegTrainer``: diffusion segmentation (Fu et al. 2023, ImgX-DiffSeg) inside nnU-Net's training run:
nnU-Net's data loader, patch sampler, augmentation, folds and final validation; the network is a
``DiffusionSegmenter`` whose training forward returns the loss and whose eval forward samples a segmentation.

Validation inside training samples with ``training.val_sampling_steps`` steps and one seed, so the pseudo Dice in
``progress.png`` and the choice of ``checkpoint_best`` measure the segmentations the model really produces.
Previews (training_previews.py) show image | reference | prediction | entropy of the planned ensemble's mean
probabilities for the first case of the last validation batch, sampled with the validation steps.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import replace

import numpy as np
import torch
from torch import nn

from nnugen.diffusion import dice_ce_loss, one_hot
from nnugen.evaluation.error_detection import predictive_entropy
from nnugen.models.compile_policy import predictor_compile_off
from nnugen.models.diffusion_segmenter import DiffusionSegmenter
from nnugen.trainers.nnugen_trainer import NnugenTrainer
from nnugen.trainers.pretrained_start import load_into_denoiser, nnunet_weights


class SampledSegmentationLoss(nn.Module):
    """Dice + CE of sampled logits against the label map: what nnU-Net's validation_step calls ``self.loss``."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_ce_loss(logits.float(), one_hot(target, self.num_classes))


class NnugenDiffSegTrainer(NnugenTrainer):
    nnugen_task = "segmentation"
    has_previews = True

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.require_plain_labels("diffusion segmentation (use NnugenBaselineTrainer for this dataset)")
        self.enable_deep_supervision = False
        self._validation_sampling = ExitStack()

    def _build_loss(self):
        return SampledSegmentationLoss(self.label_manager.num_segmentation_heads)

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # the denoiser's own deep supervision (diffusion.deep_supervision) is part of its training loss

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, patch, mirror_axes = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self.settings.sampler.mirroring:
            self.inference_allowed_mirroring_axes = None  # each mirror would repeat the whole sampling
        return rotation, dummy_2d, patch, mirror_axes

    def compute_loss(self, data: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.network(data, one_hot(target, self.label_manager.num_segmentation_heads))
        for name, part in self.segmenter().last_loss_parts.items():
            self.log_metric(f"diffusion_{name}", part)
        return loss

    @classmethod
    def load_pretrained(cls, network: DiffusionSegmenter, filename: str, image_channels: int) -> int:
        """nnU-Net's plain U-Net mapped into the denoiser one to one (networks/plain_unet_weights.py): right after
        loading, the denoiser's x0 logits are the nnU-Net network's for any noisy mask and timestep."""
        if network.diffusion.model_output != "x0":
            raise ValueError(f"-pretrained_weights: diffusion.model_output is {network.diffusion.model_output!r}; "
                             "nnU-Net's logits are x0 logits, plan the segmentation task with model_output x0")
        return load_into_denoiser(network.denoiser, nnunet_weights(filename), image_channels, filename)

    def partitioned_network(self) -> torch.nn.Module:
        if self.settings.diffusion.deep_supervision:
            raise ValueError("--partition: the denoiser's deep supervision (diffusion.deep_supervision) bypasses the "
                             "partitioned forward; plan the segmentation task without it")
        return self.network.denoiser  # before the SpatialDomain wrap

    def segmenter(self) -> DiffusionSegmenter:
        return self.network.module if self.is_ddp else self.network

    def perform_actual_validation(self, save_probabilities: bool = False):
        with predictor_compile_off():  # nnU-Net's predictor would compile the sampler loop; the denoiser already is
            super().perform_actual_validation(save_probabilities)

    def preview_panels(self, epoch: int) -> tuple[np.ndarray, list]:
        """Image (first channel) | reference | prediction | predictive entropy (nats) of the preview case: the
        planned seeds' mean probabilities with ``training.val_sampling_steps`` steps, seeded with the epoch."""
        segmenter = self.segmenter()
        sampler = replace(self.settings.sampler, steps=self.settings.training.val_sampling_steps)
        with segmenter.sampling(sampler, epoch):
            logits = segmenter(self.preview_batch["data"].to(self.device))  # log of the seeds' mean probabilities
        probabilities = logits[0].float().exp().cpu().numpy()
        classes = probabilities.shape[0]
        panels = np.stack([self.preview_batch["data"][0, 0].float().numpy(),
                           self.preview_batch["target"][0, 0].float().numpy(),
                           probabilities.argmax(axis=0).astype(np.float32), predictive_entropy(probabilities)])
        labels = (0.0, float(classes - 1))
        return panels, [None, labels, labels, (0.0, math.log(classes))]

    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        # one seed and the validation steps, for this validation epoch only (left in on_validation_epoch_end)
        sampler = replace(self.settings.sampler, steps=self.settings.training.val_sampling_steps, seeds=1)
        self._validation_sampling.enter_context(self.segmenter().sampling(sampler))

    def on_validation_epoch_end(self, val_outputs: list[dict]):
        self._validation_sampling.close()
        super().on_validation_epoch_end(val_outputs)
