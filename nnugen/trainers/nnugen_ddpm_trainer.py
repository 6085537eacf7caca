"""``NnugenDDPMTrainer``: pixel-space generation of image patches (and labels) with nnU-Net's patch sampler and
augmentation; the network is an ``ImageGenerator`` whose denoiser is the plan's U-Net (medimgen). Mode from the
plans' ``generation.mode``: image only, image + label jointly, or image for a given label map (by concatenation, or
by an adapter on a frozen base DDPM, loaded weights-only from ``generation.base_model`` at the start). EMA weights
are kept inside the model (so they are in every checkpoint) and used for sampling; previews (a sample, for the
label map of a validation case when conditioned) every ``training.preview_every`` epochs and after the last go to
``fold_F/previews`` (training_previews.py). At the end the denoiser is exported weights-only
(``denoiser.json`` + ``denoiser_weights.pt``), so that an adapter can be trained on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from nnunetv2.paths import nnUNet_results
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnugen.config import CONDITIONED_MODES
from nnugen.diffusion import one_hot
from nnugen.evaluation.previews import preview_panels
from nnugen.models.denoiser_files import DDPM_BASE, denoiser_description, export_denoiser, read_base_denoiser
from nnugen.models.image_generator import ImageGenerator
from nnugen.trainers.nnugen_generative_trainer import NnugenGenerativeTrainer


class NnugenDDPMTrainer(NnugenGenerativeTrainer):
    nnugen_task = "ddpm"
    has_previews = True

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # an adapter's base model is checked and read before nnU-Net's constructor creates the output folder, so a
        # missing or mismatched base writes nothing
        self.base = self._read_base(plans, configuration, fold, dataset_json)
        super().__init__(plans, configuration, fold, dataset_json, device)

    @classmethod
    def _read_base(cls, plans: dict, configuration: str, fold, dataset_json: dict) -> tuple[Path, dict] | None:
        """(folder, weights) of the frozen base DDPM for mode ``label_adapter``, else None."""
        manager = PlansManager(plans)
        settings = cls.task_settings(manager.get_configuration(configuration).configuration, configuration)
        if settings.generation.mode != "label_adapter":
            return None
        expected = denoiser_description(settings, len(dataset_json["channel_names"]), "image")
        return read_base_denoiser(DDPM_BASE, settings.generation.base_model, expected, Path(nnUNet_results.get()),
                                  manager.dataset_name, manager.plans_name, configuration, fold, cls.__name__)

    def generator(self) -> ImageGenerator:
        return self.network.module if self.is_ddp else self.network

    def partitioned_network(self) -> torch.nn.Module:
        if self.base is not None:
            raise ValueError("--partition: a label adapter feeds the denoiser residuals of the whole patch; train the "
                             "adapter unpartitioned")
        return self.network.denoiser  # before the SpatialDomain wrap

    def initialize(self):
        super().initialize()
        if self.base is not None:
            self.generator().denoiser.load_state_dict(self.base[1])
            self.print_to_log_file(f"label adapter on the frozen base DDPM in {self.base[0]} (weights only)")

    def compute_loss(self, data: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        image = self.intensity.to_model(data)
        label = one_hot(target, self.label_manager.num_segmentation_heads, diffusion_space=True, clamp=True)
        mode = self.settings.generation.mode
        if mode == "joint":
            return self.network(torch.cat([image, label], dim=1))
        return self.network(image, label if mode in CONDITIONED_MODES else None)

    def after_optimizer_step(self) -> None:
        self.generator().update_ema()

    def preview_panels(self, epoch: int) -> tuple[np.ndarray, None]:
        """A sample's image channels (and generated label); conditioned, for the preview case's label map."""
        condition = None
        if self.settings.generation.mode in CONDITIONED_MODES:
            condition = one_hot(self.preview_batch["target"].to(self.device),
                                self.label_manager.num_segmentation_heads, diffusion_space=True, clamp=True)
        sampler, torch_generator = self.preview_sampling(epoch)
        sample = self.generator().sample(1, condition=condition, generator=torch_generator, sampler=sampler,
                                         device=self.device)
        return preview_panels(sample[0], self.num_input_channels), None

    def on_train_end(self):
        super().on_train_end()
        mode = self.settings.generation.mode
        if self.local_rank == 0 and mode != "label_adapter":
            export_denoiser(self.generator(), denoiser_description(self.settings, self.num_input_channels, mode),
                            Path(self.output_folder))
            self.print_to_log_file(f"denoiser exported (weights only) to {self.output_folder}")
