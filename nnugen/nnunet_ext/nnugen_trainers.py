"""Re-exported for nnU-Net's lookup (``-tr NnugenBaselineTrainer`` ...)."""

from nnugen.trainers.nnugen_baseline_trainer import NnugenBaselineTrainer

__all__ = ["NnugenBaselineTrainer"]
