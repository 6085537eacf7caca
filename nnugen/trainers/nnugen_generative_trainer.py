"""``NnugenGenerativeTrainer``: what generative trainers share on top of NnugenTrainer. nnU-Net's loop, logger and
checkpoints stay; validation measures the training loss on validation patches (no Dice: nothing is segmented),
and nnU-Net's "pseudo Dice" slot carries the negative validation loss, so its moving average picks
``checkpoint_best`` as the lowest validation loss. The log says "New best validation loss" (epoch_end.py) and
``progress.png`` plots the task's own losses (loss_curves.py), never that slot as a pseudo Dice. Data arrive from
nnU-Net's loader in its normalisation and are mapped to [-1, 1] with the plans' intensity map."""

from __future__ import annotations

import numpy as np
import torch

from nnugen.config import SamplerSettings, section_of
from nnugen.models.intensity_map import IntensityMap
from nnugen.trainers.ddp import mean_over_ranks
from nnugen.trainers.loss_curves import read_history, record, write_progress
from nnugen.trainers.nnugen_trainer import NnugenTrainer
from nnugen.trainers.training_previews import first_case


class NnugenGenerativeTrainer(NnugenTrainer):
    ddp_find_unused_parameters = True  # conditioning dropout and adapters leave branches unused in some steps
    best_by_loss = True

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.require_plain_labels("generative training")
        self.enable_deep_supervision = False
        self.intensity = IntensityMap(section_of(self.configuration_manager.configuration, configuration).intensity)

    def on_train_start(self):
        super().on_train_start()
        # the loss parts of the epochs a resumed run already has (nnU-Net's logger keeps only its own keys)
        self.loss_history = read_history(self.output_folder, self.current_epoch) if self.local_rank == 0 else {}

    def plot_progress(self) -> None:
        """``progress.png`` with the task's losses and ``progress_losses.json`` (loss_curves.py)."""
        record(self.loss_history, self.current_epoch, self.epoch_metric_means)
        write_progress(self.output_folder, self.loss_history, self.logger.get_value, self.current_epoch + 1)

    def preview_sampling(self, epoch: int) -> tuple[SamplerSettings, torch.Generator]:
        """How a preview samples: DPM-Solver++ with ``generation.preview_steps``, noise seeded with the epoch."""
        sampler = SamplerSettings(name="dpm_solver++", steps=self.settings.generation.preview_steps)
        return sampler, torch.Generator(device=self.device).manual_seed(epoch)

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # generative networks have no deep supervision heads

    def validation_step(self, batch: dict) -> dict:
        self.preview_batch = first_case(batch)
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"].to(self.device, non_blocking=True)
        with self.autocast():
            loss = self.compute_loss(data, target)
        return {"loss": loss.detach().float().cpu().numpy()}

    def on_validation_epoch_end(self, val_outputs: list[dict]):
        losses = [float(o["loss"]) for o in val_outputs if np.isfinite(o["loss"]).all()]
        loss = mean_over_ranks({"loss": sum(losses)}, {"loss": len(losses)}).get("loss", float("nan"))
        self.logger.log("val_losses", loss, self.current_epoch)
        # nnU-Net keeps the best "pseudo Dice" moving average: higher is better, so it gets -loss
        self.logger.log("mean_fg_dice", -loss, self.current_epoch)
        self.logger.log("dice_per_class_or_region", [-loss], self.current_epoch)
        self.repair_nan_ema()

    def perform_actual_validation(self, save_probabilities: bool = False):
        self.print_to_log_file("generative model: no segmentation validation (the validation loss is in the log)")
        if self.local_rank == 0:  # nnUNetv2_export_model_to_zip copies every fold's validation/summary.json
            from nnugen.folders.validation_summary import write_generative_summary

            write_generative_summary(self.output_folder, self.__class__.__name__,
                                     self.logger.get_value("val_losses", step=None))
