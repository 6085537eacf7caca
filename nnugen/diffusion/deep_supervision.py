"""Deep supervision of the predicted mask (Lee et al. 2015), weighted as nnU-Net does (Isensee et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor

from nnugen.diffusion.segmentation_loss import dice_ce_loss


def deep_supervision_weights(levels: Sequence[int]) -> list[float]:
    """Weights of the full-resolution output and of the outputs at resolution ``levels`` (each halving the size
    once more): 1 / 2**level, normalised to sum to 1, as nnU-Net weights its deep supervision outputs."""
    if any(level < 1 for level in levels):
        raise ValueError(f"auxiliary levels must be >= 1 (0 is the full-resolution output), got {tuple(levels)}")
    raw = [1.0, *(0.5**level for level in levels)]
    return [w / sum(raw) for w in raw]


def downsampled_target(target_onehot: Tensor, shape: Sequence[int]) -> Tensor:
    """One-hot target (B, C, *S) averaged over the voxels that fall into each voxel of ``shape``: class fractions
    that still sum to 1 per voxel, the soft target of a coarser output."""
    if tuple(target_onehot.shape[2:]) == tuple(shape):
        return target_onehot
    return F.interpolate(target_onehot.float(), size=tuple(shape), mode="area").to(target_onehot.dtype)


def deep_supervision_loss(
    logits: Tensor,
    auxiliary_logits: Sequence[Tensor],
    levels: Sequence[int],
    target_onehot: Tensor,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    over_ranks: bool = False,
) -> Tensor:
    """Weighted Dice + CE of the full-resolution logits (B, C, *S) and of each coarser output at ``levels``
    against the target (B, C, *S) averaged down to its size; with no auxiliary output it is ``dice_ce_loss``.
    ``over_ranks``: each Dice over the batches of all DDP ranks (dice_ce_loss)."""
    if len(auxiliary_logits) != len(levels):
        raise ValueError(f"{len(auxiliary_logits)} auxiliary outputs but {len(levels)} levels; give one level each")
    weights = deep_supervision_weights(levels)
    loss = weights[0] * dice_ce_loss(logits, target_onehot, dice_weight, ce_weight, over_ranks=over_ranks)
    for weight, output in zip(weights[1:], auxiliary_logits):
        target = downsampled_target(target_onehot, output.shape[2:])
        loss = loss + weight * dice_ce_loss(output, target, dice_weight, ce_weight, over_ranks=over_ranks)
    return loss
