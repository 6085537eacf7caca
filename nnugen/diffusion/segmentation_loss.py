"""Segmentation losses on the x0 estimate's logits: soft Dice and cross-entropy, as nnU-Net (Isensee et al. 2021).

Under DDP (``over_ranks=True``) the Dice terms are summed over all ranks before dividing, as nnU-Net's
``MemoryEfficientSoftDiceLoss(ddp=True)`` does, so the loss is the batch Dice of the global batch whatever the number
of processes."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


class _SumOverRanks(torch.autograd.Function):
    """The sum of a tensor over all ranks (all-gathered, summed in rank order). Backward sums the gradients over the
    ranks: every rank computes the same loss from the sum, so a rank's own term gets world_size x its gradient, which
    DDP's average over ranks brings back to the gradient of the global loss (nnU-Net's ``AllGatherGrad``)."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> Tensor:
        gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, tensor.contiguous())
        return torch.stack(gathered).sum(0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def sum_over_ranks(tensor: Tensor) -> Tensor:
    """``tensor`` summed over the ranks of the initialised process group, differentiably; itself outside DDP."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    return _SumOverRanks.apply(tensor)


def _check(logits: Tensor, target_onehot: Tensor) -> None:
    if logits.shape != target_onehot.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target_onehot {tuple(target_onehot.shape)} must have the same shape "
            "(B, C, *spatial); one-hot encode the target with the background as channel 0"
        )
    if logits.ndim < 3 or logits.shape[1] < 2:
        raise ValueError(f"need (B, C, *spatial) with C >= 2 classes (background first), got {tuple(logits.shape)}")


def soft_dice_loss(logits: Tensor, target_onehot: Tensor, smooth: float = 1e-5, over_ranks: bool = False) -> Tensor:
    """Batch soft Dice loss 1 - mean_c Dice_c over foreground classes c >= 1, nnU-Net's (batch_dice, no background).

    logits, target_onehot: (B, C, *spatial); sums run over the batch and all voxels, in float32 as nnU-Net's, and
    with ``over_ranks`` over the batches of all DDP ranks too (nnU-Net's ``ddp=True``).
    """
    _check(logits, target_onehot)
    probs = torch.softmax(logits, dim=1)[:, 1:]
    target = target_onehot[:, 1:].to(probs.dtype)
    axes = [0, *range(2, logits.ndim)]
    intersection = (probs * target).sum(axes, dtype=torch.float32)
    denominator = probs.sum(axes, dtype=torch.float32) + target.sum(axes, dtype=torch.float32)
    if over_ranks:
        intersection, denominator = sum_over_ranks(torch.stack([intersection, denominator])).unbind(0)
    dice = (2 * intersection + smooth) / (denominator + smooth).clamp_min(1e-8)
    return 1 - dice.mean()


def dice_ce_loss(
    logits: Tensor,
    target_onehot: Tensor,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    smooth: float = 1e-5,
    over_ranks: bool = False,
) -> Tensor:
    """dice_weight * soft Dice + ce_weight * cross-entropy; logits, target_onehot (B, C, *spatial), scalar out.

    For the "x0" parameterisation `logits` is the network output; else use segmentation_logits() first. With
    ``over_ranks`` the Dice is that of the batches of all DDP ranks (see soft_dice_loss); the cross-entropy is a mean
    per rank, which DDP's gradient average makes the global mean for equal batches.
    """
    if dice_weight < 0 or ce_weight < 0 or dice_weight + ce_weight == 0:
        raise ValueError(f"weights must be >= 0 and not both 0, got dice_weight={dice_weight}, ce_weight={ce_weight}")
    _check(logits, target_onehot)
    loss = logits.new_zeros(())
    if dice_weight:
        loss = loss + dice_weight * soft_dice_loss(logits, target_onehot, smooth, over_ranks)
    if ce_weight:
        # Class-probability targets: identical to index targets for a one-hot mask, and no argmax needed.
        loss = loss + ce_weight * F.cross_entropy(logits, target_onehot.to(logits.dtype))
    return loss
