"""``NnugenDDPMTrainer``: pixel-space generation of image patches (and labels) with nnU-Net's patch sampler and
augmentation; the network is an ``ImageGenerator`` whose denoiser is the plan's U-Net (medimgen). Mode from the
plans' ``generation.mode``: image only, image + label jointly, or image for a given label map. EMA weights are kept
inside the model (so they are in every checkpoint) and used for sampling; previews every ``training.preview_every``
epochs go to ``fold_F/previews``."""

from __future__ import annotations

from pathlib import Path

import torch
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn

from nnugen.config import SamplerSettings
from nnugen.models.denoiser_from_settings import denoiser_network
from nnugen.models.image_generator import ImageGenerator
from nnugen.trainers.nnugen_generative_trainer import NnugenGenerativeTrainer, one_hot_pm1
from nnugen.trainers.previews import write_preview


class NnugenDDPMTrainer(NnugenGenerativeTrainer):
    nnugen_task = "ddpm"

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        settings = cls.task_settings(configuration_manager.configuration)
        generated, condition = ImageGenerator.channels(num_input_channels, num_output_channels,
                                                       settings.generation.mode)
        return ImageGenerator(denoiser_network(settings, generated + condition, generated), num_input_channels,
                              num_output_channels, configuration_manager.patch_size, settings.diffusion,
                              settings.sampler, settings.generation, settings.training.ema_decay)

    def generator(self) -> ImageGenerator:
        return self.network.module if self.is_ddp else self.network

    def compute_loss(self, data: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        image = self.intensity.to_model(data)
        label = one_hot_pm1(target, self.label_manager.num_segmentation_heads)
        mode = self.settings.generation.mode
        if mode == "joint":
            return self.network(torch.cat([image, label], dim=1))
        return self.network(image, label if mode == "label_conditioned" else None)

    def after_optimizer_step(self) -> None:
        self.generator().update_ema()

    def on_epoch_end(self):
        epoch = self.current_epoch
        super().on_epoch_end()
        if self.local_rank == 0 and (epoch + 1) % self.settings.training.preview_every == 0:
            self.write_preview(epoch)

    def write_preview(self, epoch: int) -> None:
        generator = self.generator()
        condition = None
        if self.settings.generation.mode == "label_conditioned":
            batch = next(self.dataloader_val)
            condition = one_hot_pm1(batch["target"][:1].to(self.device), self.label_manager.num_segmentation_heads)
        sampler = SamplerSettings(name="dpm_solver++", steps=self.settings.generation.preview_steps)
        torch_generator = torch.Generator(device=self.device).manual_seed(epoch)
        generator.eval()
        sample = generator.sample(1, condition=condition, generator=torch_generator, sampler=sampler,
                                  device=self.device)
        generator.train()
        files = write_preview(sample[0], self.num_input_channels, Path(self.output_folder) / "previews" /
                              f"epoch_{epoch:04d}.png")
        self.print_to_log_file(f"preview: {', '.join(str(f) for f in files)}")
