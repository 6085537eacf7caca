"""Segmentation losses on the x0 estimate's logits: soft Dice and cross-entropy, as nnU-Net (Isensee et al. 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check(logits: Tensor, target_onehot: Tensor) -> None:
    if logits.shape != target_onehot.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target_onehot {tuple(target_onehot.shape)} must have the same shape "
            "(B, C, *spatial); one-hot encode the target with the background as channel 0"
        )
    if logits.ndim < 3 or logits.shape[1] < 2:
        raise ValueError(f"need (B, C, *spatial) with C >= 2 classes (background first), got {tuple(logits.shape)}")


def soft_dice_loss(logits: Tensor, target_onehot: Tensor, smooth: float = 1e-5) -> Tensor:
    """Batch soft Dice loss 1 - mean_c Dice_c over foreground classes c >= 1, nnU-Net's (batch_dice, no background).

    logits, target_onehot: (B, C, *spatial); sums run over the batch and all voxels.
    """
    _check(logits, target_onehot)
    probs = torch.softmax(logits, dim=1)[:, 1:]
    target = target_onehot[:, 1:].to(probs.dtype)
    axes = [0, *range(2, logits.ndim)]
    intersection = (probs * target).sum(axes)
    denominator = probs.sum(axes) + target.sum(axes)
    dice = (2 * intersection + smooth) / (denominator + smooth).clamp_min(1e-8)
    return 1 - dice.mean()


def dice_ce_loss(
    logits: Tensor, target_onehot: Tensor, dice_weight: float = 1.0, ce_weight: float = 1.0, smooth: float = 1e-5
) -> Tensor:
    """dice_weight * soft Dice + ce_weight * cross-entropy; logits, target_onehot (B, C, *spatial), scalar out.

    For the "x0" parameterisation `logits` is the network output; else use segmentation_logits() first.
    """
    if dice_weight < 0 or ce_weight < 0 or dice_weight + ce_weight == 0:
        raise ValueError(f"weights must be >= 0 and not both 0, got dice_weight={dice_weight}, ce_weight={ce_weight}")
    _check(logits, target_onehot)
    loss = logits.new_zeros(())
    if dice_weight:
        loss = loss + dice_weight * soft_dice_loss(logits, target_onehot, smooth)
    if ce_weight:
        # Class-probability targets: identical to index targets for a one-hot mask, and no argmax needed.
        loss = loss + ce_weight * F.cross_entropy(logits, target_onehot.to(logits.dtype))
    return loss
