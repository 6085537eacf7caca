"""``NnugenGenerativeTrainer``: what generative trainers share on top of NnugenTrainer. nnU-Net's loop, logger and
checkpoints stay; validation measures the training loss on validation patches (no Dice: nothing is segmented),
and nnU-Net's "pseudo Dice" slot carries the negative validation loss, so its moving average picks
``checkpoint_best`` as the lowest validation loss (and ``progress.png`` plots it). Data arrive from nnU-Net's loader
in its normalisation and are mapped to [-1, 1] with the plans' intensity map."""

from __future__ import annotations

import numpy as np
import torch

from nnugen.config import section_of
from nnugen.models.intensity_map import IntensityMap
from nnugen.trainers.ddp import mean_over_ranks
from nnugen.trainers.nnugen_trainer import NnugenTrainer


class NnugenGenerativeTrainer(NnugenTrainer):
    ddp_find_unused_parameters = True  # conditioning dropout and adapters leave branches unused in some steps

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.require_plain_labels("generative training")
        self.enable_deep_supervision = False
        self.intensity = IntensityMap(section_of(self.configuration_manager.configuration, configuration).intensity)

    def set_deep_supervision_enabled(self, enabled: bool):
        pass  # generative networks have no deep supervision heads

    def validation_step(self, batch: dict) -> dict:
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
