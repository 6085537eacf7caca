"""Losses of the autoencoder (L1 is ``torch.nn.functional.l1_loss``): perceptual and adversarial. Torch and MONAI
only; nothing here downloads weights."""

from nnugen.losses.adversarial import ADVERSARIAL_CRITERIA, AdversarialLoss, adversarial_weight_schedule
from nnugen.losses.perceptual import FeaturePerceptualLoss

__all__ = ["ADVERSARIAL_CRITERIA", "AdversarialLoss", "FeaturePerceptualLoss", "adversarial_weight_schedule"]
