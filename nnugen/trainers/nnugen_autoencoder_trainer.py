"""``NnugenAutoencoderTrainer``: the KL or VQ autoencoder of latent diffusion (Rombach et al. 2022; Esser et al.
2021 VQ-GAN; medimgen), on nnU-Net's patches. Loss = l1 * |x - x_hat| + perceptual * LPIPS-like distance (offline
features, see perceptual_network.py) + adversarial * PatchGAN generator loss (after the warm-up) + kl / codebook
* regulariser. The PatchGAN discriminator (MONAI) is trained after every autoencoder step with its own optimiser.
Validation batches also log the reconstruction's PSNR and SSIM (evaluation/reconstruction.py, on the model's
[-1, 1] scale), and the previews show input | reconstruction of the last validation batch. At the end the
autoencoder is exported weights-only (``autoencoder_weights.pt`` + ``autoencoder.json``) next to
the checkpoints, which is what the latent diffusion trainer loads. Under nnugen's compile policy (compile_policy.py)
its encoder and decoder are compiled in place, so the export has the plain autoencoder's keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from nnunetv2.paths import nnUNet_results

from nnugen.evaluation.reconstruction import psnr, ssim
from nnugen.folders.checkpoint_files import unwrapped_network
from nnugen.losses.adversarial import AdversarialLoss, adversarial_weight_schedule
from nnugen.models.autoencoder_files import ARGUMENTS_KEY, save_autoencoder
from nnugen.models.model_builders import autoencoder_arguments
from nnugen.networks.patch_discriminator import make_patch_discriminator
from nnugen.trainers.ddp import all_ranks_agree, average_gradients, broadcast_buffers, broadcast_module
from nnugen.trainers.nnugen_generative_trainer import NnugenGenerativeTrainer
from nnugen.trainers.perceptual_network import perceptual_loss


class NnugenAutoencoderTrainer(NnugenGenerativeTrainer):
    nnugen_task = "autoencoder"
    has_previews = True
    data_range = 2.0
    """Intensity range of PSNR / SSIM: the model's [-1, 1] (the intensity map's)."""

    def initialize(self):
        super().initialize()
        patch = self.configuration_manager.patch_size
        layers = type(self.settings.autoencoder).discriminator_layers(patch)
        self.discriminator = make_patch_discriminator(self.num_input_channels, len(patch), num_layers=layers,
                                                      patch_size=patch).to(self.device)
        broadcast_module(self.discriminator)  # trained outside DDP: same start on every rank, averaged gradients
        self.discriminator_optimizer = torch.optim.AdamW(self.discriminator.parameters(), self.initial_lr,
                                                         betas=(0.5, 0.9))
        self.adversarial = AdversarialLoss("least_squares")
        results = Path(nnUNet_results.get()) if nnUNet_results.is_set() else None
        self.perceptual = perceptual_loss(self.settings.autoencoder.perceptual_network, results,
                                          self.plans_manager.dataset_name, self.configuration_name, self.fold,
                                          self.intensity.to_preprocessed, self.print_to_log_file)
        if self.perceptual is not None:
            self.perceptual.to(self.device)
        self._iteration = 0
        self._pair: tuple[torch.Tensor, torch.Tensor] | None = None

    def adversarial_weight(self) -> float:
        ae = self.settings.autoencoder
        return ae.adversarial_weight * adversarial_weight_schedule(self._iteration, ae.adversarial_warmup_iterations)

    def compute_loss(self, data: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        ae = self.settings.autoencoder
        x = self.intensity.to_model(data)
        reconstruction, regulariser = self.network(x)
        parts = {"l1": ae.l1_weight * (reconstruction - x).abs().mean(),
                 ae.kind: (ae.kl_weight if ae.kind == "kl" else ae.codebook_weight) * regulariser}
        if self.perceptual is not None and ae.perceptual_weight > 0:
            parts["perceptual"] = ae.perceptual_weight * self.perceptual(reconstruction.float(), x.float())
        if self.network.training and self.adversarial_weight() > 0:
            fake_scores = self.discriminator(reconstruction)
            parts["adversarial"] = self.adversarial_weight() * self.adversarial.generator_loss(fake_scores)
        for name, part in parts.items():
            self.log_metric(name, part)
        if not self.network.training:  # validation: how faithful the reconstruction is
            self.log_metric("psnr", psnr(reconstruction.detach(), x, self.data_range).mean())
            self.log_metric("ssim", ssim(reconstruction.detach(), x, self.data_range).mean())
        self._pair = (x.detach(), reconstruction.detach())
        return sum(parts.values())

    def after_optimizer_step(self) -> None:
        self._iteration += 1
        if self._pair is None or self.adversarial_weight() == 0:
            return
        real, fake = self._pair
        self.discriminator_optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss = self.adversarial.discriminator_loss(self.discriminator(real), self.discriminator(fake))
        if all_ranks_agree(bool(torch.isfinite(loss)), self.device):
            loss.backward()
            average_gradients(self.discriminator)
            self.discriminator_optimizer.step()
            broadcast_buffers(self.discriminator)
            self.log_metric("discriminator", loss)

    def extra_checkpoint_state(self) -> dict:
        return {ARGUMENTS_KEY: autoencoder_arguments(self.settings, self.num_input_channels),  # read if exported alone
                "nnugen_discriminator": self.discriminator.state_dict(),
                "nnugen_discriminator_optimizer": self.discriminator_optimizer.state_dict(),
                "nnugen_iteration": self._iteration}

    def restore_extra_checkpoint_state(self, checkpoint: dict) -> None:
        if "nnugen_discriminator" in checkpoint:
            self.discriminator.load_state_dict(checkpoint["nnugen_discriminator"])
            self.discriminator_optimizer.load_state_dict(checkpoint["nnugen_discriminator_optimizer"])
            self._iteration = checkpoint["nnugen_iteration"]

    def preview_panels(self, epoch: int) -> tuple[np.ndarray, list] | None:
        """Input channels | their reconstructions, of the last batch (the epoch's last validation batch), both
        shown on the model's [-1, 1] scale."""
        if self._pair is None:
            return None
        real, fake = (t[0].float().cpu().numpy() for t in self._pair)
        return np.concatenate([real, fake]), [(-1.0, 1.0)] * (2 * len(real))

    def on_train_end(self):
        super().on_train_end()
        if self.local_rank == 0:
            save_autoencoder(unwrapped_network(self), autoencoder_arguments(self.settings, self.num_input_channels),
                             Path(self.output_folder))
            self.print_to_log_file(f"autoencoder exported (weights only) to {self.output_folder}")
