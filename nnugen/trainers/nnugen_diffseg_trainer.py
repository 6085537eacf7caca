"""``NnugenDiffSegTrainer``: diffusion segmentation (Fu et al. 2023, ImgX-DiffSeg) inside nnU-Net's training run:
nnU-Net's data loader, patch sampler, augmentation, folds and final validation; the network is a
``DiffusionSegmenter`` whose training forward returns the loss and whose eval forward samples a segmentation.

Validation inside training samples with ``training.val_sampling_steps`` steps and one seed, so the pseudo Dice in
``progress.png`` and the choice of ``checkpoint_best`` measure the segmentations the model really produces.
"""

from __future__ import annotations

import torch
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnugen.diffusion import dice_ce_loss
from nnugen.models.compile_policy import predictor_compile_off
from nnugen.models.denoiser_from_settings import denoiser_network
from nnugen.models.diffusion_segmenter import DiffusionSegmenter
from nnugen.networks.zero_init import zero_input_channels, zero_time_modulation
from nnugen.trainers.nnugen_trainer import NnugenTrainer


def one_hot(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Label map (B, 1, *spatial) -> one-hot (B, C, *spatial) float."""
    return torch.nn.functional.one_hot(target[:, 0].long(), num_classes).movedim(-1, 1).float()


class SampledSegmentationLoss(nn.Module):
    """Dice + CE of sampled logits against the label map: what nnU-Net's validation_step calls ``self.loss``."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.num_classes = num_classes

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dice_ce_loss(logits.float(), one_hot(target, self.num_classes))


class NnugenDiffSegTrainer(NnugenTrainer):
    nnugen_task = "segmentation"

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.require_plain_labels("diffusion segmentation (use NnugenBaselineTrainer for this dataset)")
        self.enable_deep_supervision = False

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        settings = cls.task_settings(configuration_manager.configuration)
        diffusion = settings.diffusion
        extra = num_output_channels if diffusion.self_conditioning else 0
        network = denoiser_network(settings, num_input_channels + num_output_channels + extra, num_output_channels,
                                   deep_supervision=diffusion.deep_supervision)
        if settings.denoiser.zero_init_conditioning:
            zero_input_channels(network, num_input_channels)
            zero_time_modulation(network)
        return DiffusionSegmenter(network, num_output_channels, diffusion, settings.sampler, amp=settings.memory.amp)

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

    def segmenter(self) -> DiffusionSegmenter:
        return self.network.module if self.is_ddp else self.network

    def perform_actual_validation(self, save_probabilities: bool = False):
        with predictor_compile_off():  # nnU-Net's predictor would compile the sampler loop; the denoiser already is
            super().perform_actual_validation(save_probabilities)

    def on_validation_epoch_start(self):
        super().on_validation_epoch_start()
        self.segmenter().set_sampling(steps=self.settings.training.val_sampling_steps, seeds=1)

    def on_validation_epoch_end(self, val_outputs: list[dict]):
        super().on_validation_epoch_end(val_outputs)
        self.segmenter().set_sampling(steps=self.settings.sampler.steps, seeds=self.settings.sampler.seeds)
