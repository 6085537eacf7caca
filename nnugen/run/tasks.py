"""The tasks ``nnugen_train --task`` accepts, the nnugen-section task each reads, and its nnU-Net trainer."""

from __future__ import annotations

from dataclasses import dataclass

from nnugen.config import CONFIGURATION_ALIASES


@dataclass(frozen=True)
class TrainTask:
    cli_name: str
    section: str
    trainer: str


TRAIN_TASKS = {
    task.cli_name: task
    for task in (
        TrainTask("seg", "segmentation", "NnugenDiffSegTrainer"),
        TrainTask("ddpm", "ddpm", "NnugenDDPMTrainer"),
        TrainTask("adapter", "ddpm", "NnugenDDPMTrainer_labelAdapter"),
        TrainTask("autoencoder", "autoencoder", "NnugenAutoencoderTrainer"),
        TrainTask("ldm", "ldm", "NnugenLDMTrainer"),
        TrainTask("anomaly", "anomaly", "NnugenAnomalyTrainer"),
        TrainTask("anomaly_adapter", "anomaly", "NnugenAnomalyTrainer_anatomyAdapter"),
        TrainTask("baseline", "baseline", "NnugenBaselineTrainer"),
    )
}

CONFIGURATIONS = ("2d", *CONFIGURATION_ALIASES, "3d_fullres", "3d_lowres")


def built_trainers() -> set[str]:
    """Trainers that exist in this version (the names nnugen/nnunet_ext re-exports)."""
    from nnugen.nnunet_ext import nnugen_trainers

    return set(nnugen_trainers.__all__)
