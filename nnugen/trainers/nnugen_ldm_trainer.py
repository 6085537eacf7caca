"""``NnugenLDMTrainer``: latent diffusion (Rombach et al. 2022; Medical Diffusion; medimgen): the plan-derived
denoiser learns the latents of a frozen, trained autoencoder. The autoencoder is found by its model folder
(``NnugenAutoencoderTrainer__nnugenPlans__CONFIG/fold_F`` of the same dataset, configuration and fold) and loaded
weights-only. Latents are scaled by 1 / std, estimated from training batches at the start (Rombach et al. 2022,
sec. 4.3.2). Under DDP rank 0 estimates it and every rank uses rank 0's value. Every checkpoint carries what sampling
needs besides the denoiser: the scale factor and the frozen autoencoder (arguments and weights), so the model folder
travels with ``nnUNetv2_export_model_to_zip`` alone; ``latent.json`` next to the checkpoints records the same scale
and where the autoencoder's fold folder is, relative to this fold folder (models/latent_files.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from nnunetv2.paths import nnUNet_results
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from nnugen.folders.checkpoint_files import unwrapped_network
from nnugen.folders.model_folder import ModelFolder
from nnugen.models.autoencoder_files import CHECKPOINT_KEY, autoencoder_entry, load_autoencoder
from nnugen.models.latent_files import SCALE_KEY, write_latent_record
from nnugen.networks.autoencoder import latent_patch, latent_scale_factor
from nnugen.tasks import TASKS
from nnugen.trainers.ddp import from_rank_zero
from nnugen.trainers.nnugen_generative_trainer import NnugenGenerativeTrainer

SCALE_BATCHES = 4  # training batches whose latents estimate the scale factor


class NnugenLDMTrainer(NnugenGenerativeTrainer):
    nnugen_task = "ldm"
    has_previews = True

    def autoencoder_folder(self) -> Path:
        folder = ModelFolder.of(self.plans_manager.dataset_name, TASKS["autoencoder"].trainer,
                                self.configuration_name, self.plans_manager.plans_name, Path(nnUNet_results.get()))
        return folder.fold(self.fold)

    def initialize(self):
        super().initialize()
        self.autoencoder, self.autoencoder_arguments = load_autoencoder(self.autoencoder_folder(), self.device)
        self.check_autoencoder()
        self.print_to_log_file(f"latent diffusion on the frozen autoencoder in {self.autoencoder_folder()}")
        self.scale_factor: float | None = None

    def check_autoencoder(self) -> None:
        """ValueError unless the loaded autoencoder's latents have the network's channels and the plans' latent
        patch (the network is read unwrapped: DDP's wrapper has no ``image_channels``)."""
        patch = self.configuration_manager.patch_size
        expected = latent_patch(patch, section_autoencoder(self.configuration_manager).strides)
        if self.autoencoder.latent_channels != unwrapped_network(self).image_channels or \
                self.autoencoder.latent_shape(patch) != expected:
            raise ValueError(f"the autoencoder in {self.autoencoder_folder()} does not match the plans' autoencoder "
                             "settings; retrain it (nnugen_train ... --task autoencoder) after changing them")

    def encode(self, data: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.autoencoder.encode(self.intensity.to_model(data)).mode()

    def on_train_start(self):
        super().on_train_start()
        if self.scale_factor is None:  # alike on every rank: all restore the same checkpoint, or none
            self.scale_factor = from_rank_zero(self.estimate_scale_factor)  # one value, whatever each rank's batches
        self.print_to_log_file(f"latent scale factor {self.scale_factor:.4f} (1 / std of training latents)")
        if self.local_rank == 0:
            write_latent_record(Path(self.output_folder), self.autoencoder_folder(), self.scale_factor)

    def estimate_scale_factor(self) -> float:
        return estimated_scale_factor(self.encode, self.dataloader_train, self.device)

    def compute_loss(self, data: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.network(self.encode(data) * self.scale_factor)

    def after_optimizer_step(self) -> None:
        unwrapped_network(self).update_ema()

    def preview_panels(self, epoch: int):
        """A sample decoded by the frozen autoencoder (training_previews.py), as ``nnugen_sample`` makes it."""
        from nnugen.evaluation.previews import preview_panels
        from nnugen.models.latent_generator import LatentGenerator

        sampler, torch_generator = self.preview_sampling(epoch)
        model = LatentGenerator(unwrapped_network(self), self.autoencoder, self.scale_factor)
        sample = model.sample(1, generator=torch_generator, sampler=sampler, device=self.device)
        return preview_panels(sample[0], self.num_input_channels), None

    def extra_checkpoint_state(self) -> dict:
        return {SCALE_KEY: self.scale_factor,
                CHECKPOINT_KEY: autoencoder_entry(self.autoencoder, self.autoencoder_arguments)}

    def restore_extra_checkpoint_state(self, checkpoint: dict) -> None:
        self.scale_factor = checkpoint.get(SCALE_KEY, self.scale_factor)


def estimated_scale_factor(encode: Callable[[torch.Tensor], torch.Tensor], batches: Iterator[dict],
                           device: torch.device) -> float:
    """1 / std of the latents ``encode`` gives for ``SCALE_BATCHES`` training batches (Rombach et al. 2022,
    sec. 4.3.2); shared by the latent diffusion and the latent anomaly trainers."""
    with torch.no_grad():
        latents = [encode(next(batches)["data"].to(device)) for _ in range(SCALE_BATCHES)]
    return latent_scale_factor(torch.cat(latents))


def section_autoencoder(configuration_manager: ConfigurationManager):
    """The autoencoder settings of the same configuration (the LDM's latents are that autoencoder's)."""
    from nnugen.config import section_of

    return section_of(configuration_manager.configuration).task("autoencoder").autoencoder
