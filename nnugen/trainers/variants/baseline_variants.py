"""Variants of the yardstick, to tell apart what the diffusion trainer lacks from what diffusion costs."""

import torch

from nnugen.trainers.nnugen_baseline_trainer import NnugenBaselineTrainer


class NnugenBaselineTrainer_noDeepSupervision(NnugenBaselineTrainer):
    """nnU-Net's network and loss without deep supervision, as ``nnUNetTrainerNoDeepSupervision`` but with the
    plan's budget: what the baseline is worth without the auxiliary low-resolution losses."""

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.enable_deep_supervision = False
