"""Re-exported for nnU-Net's lookup (``-tr NnugenBaselineTrainer`` ...)."""

from nnugen.trainers.nnugen_baseline_trainer import NnugenBaselineTrainer
from nnugen.trainers.nnugen_diffseg_trainer import NnugenDiffSegTrainer

__all__ = ["NnugenBaselineTrainer", "NnugenDiffSegTrainer"]
