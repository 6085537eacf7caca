"""Re-exported for nnU-Net's lookup (``-tr NnugenBaselineTrainer`` ...)."""

from nnugen.trainers.nnugen_anomaly_trainer import NnugenAnomalyTrainer
from nnugen.trainers.nnugen_autoencoder_trainer import NnugenAutoencoderTrainer
from nnugen.trainers.nnugen_baseline_trainer import NnugenBaselineTrainer
from nnugen.trainers.nnugen_ddpm_trainer import NnugenDDPMTrainer
from nnugen.trainers.nnugen_diffseg_trainer import NnugenDiffSegTrainer
from nnugen.trainers.nnugen_ldm_trainer import NnugenLDMTrainer
from nnugen.trainers.variants.anomaly_anatomy_adapter import NnugenAnomalyTrainer_anatomyAdapter
from nnugen.trainers.variants.baseline_variants import NnugenBaselineTrainer_noDeepSupervision
from nnugen.trainers.variants.ddpm_label_adapter import NnugenDDPMTrainer_labelAdapter
from nnugen.trainers.variants.diffseg_ablations import (
    NnugenDiffSegTrainer_deepSupervision,
    NnugenDiffSegTrainer_eps,
    NnugenDiffSegTrainer_noDice,
    NnugenDiffSegTrainer_noRecycling,
    NnugenDiffSegTrainer_noZeroInit,
    NnugenDiffSegTrainer_residual,
    NnugenDiffSegTrainer_T1000,
)

__all__ = [
    "NnugenAnomalyTrainer",
    "NnugenAnomalyTrainer_anatomyAdapter",
    "NnugenAutoencoderTrainer",
    "NnugenBaselineTrainer",
    "NnugenBaselineTrainer_noDeepSupervision",
    "NnugenDDPMTrainer",
    "NnugenDDPMTrainer_labelAdapter",
    "NnugenDiffSegTrainer",
    "NnugenDiffSegTrainer_T1000",
    "NnugenDiffSegTrainer_deepSupervision",
    "NnugenDiffSegTrainer_eps",
    "NnugenDiffSegTrainer_noDice",
    "NnugenDiffSegTrainer_noRecycling",
    "NnugenDiffSegTrainer_residual",
    "NnugenDiffSegTrainer_noZeroInit",
    "NnugenLDMTrainer",
]
