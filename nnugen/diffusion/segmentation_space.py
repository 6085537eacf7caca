"""Segmentations in diffusion space (Chen et al. 2022 "Analog bits"; Fu et al. 2023 ImgX-DiffSeg).

A one-hot mask (B, C, *spatial) with C classes (background included) is diffused as 2 * onehot - 1 in [-1, 1].
The decision for the x0 estimate: it is always a categorical distribution per voxel, held as logits (B, C, *spatial).
For the "x0" parameterisation the network outputs these logits and x0 in diffusion space is 2 * softmax(logits) - 1,
so every estimate is a valid soft mask. For "eps" and "v" the derived x0 is mapped to probabilities by clamping
(x0 + 1) / 2 to [0, 1] and renormalising; its logarithm serves as logits, so one Dice + CE loss covers all kinds.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn import functional

from nnugen.diffusion.broadcast import schedule_at, working_dtype
from nnugen.diffusion.parameterisation import Denoiser, check_parameterisation, predict_x0

# Floor for probabilities recovered from an eps / v output, so their logarithm stays finite.
MIN_PROBABILITY = 1e-6


def mask_to_diffusion_space(onehot: Tensor) -> Tensor:
    """One-hot {0, 1} (B, C, *spatial) -> {-1, 1} in the input's floating dtype (Chen et al. 2022)."""
    dtype = onehot.dtype if onehot.dtype.is_floating_point else torch.float32
    return onehot.to(dtype) * 2 - 1


def one_hot(labels: Tensor, num_classes: int, *, diffusion_space: bool = False, clamp: bool = False) -> Tensor:
    """Label map (B, 1, *spatial) of class indices -> one-hot (B, K, *spatial) float32, K = ``num_classes``; the one
    conversion of label maps that trainers, models and conditions use.

    Args:
        labels: class indices 0 .. K - 1 (any dtype, read as integers: a bool mask gives 0 / 1).
        num_classes: K, the number of channels of the result.
        diffusion_space: give {-1, 1} (``mask_to_diffusion_space``: how labels are diffused and condition a network)
            instead of {0, 1}.
        clamp: map indices outside [0, K - 1] to the nearest class instead of raising (``functional.one_hot`` refuses
            them).

    Example::

        >>> one_hot(torch.tensor([[[0, 2]]]), 3, diffusion_space=True)[0].T.tolist()
        [[1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]]
    """
    indices = labels[:, 0].long()
    if clamp:
        indices = indices.clamp(0, num_classes - 1)
    onehot = functional.one_hot(indices, num_classes).movedim(-1, 1).float()
    return mask_to_diffusion_space(onehot) if diffusion_space else onehot


def diffusion_space_to_probs(x: Tensor) -> Tensor:
    """x in diffusion space (B, C, *spatial) -> class probabilities summing to 1 over C (argmax gives the mask)."""
    probs = ((x + 1) / 2).clamp(MIN_PROBABILITY, 1.0)
    return probs / probs.sum(dim=1, keepdim=True)


def logits_to_diffusion_space(logits: Tensor) -> Tensor:
    """Class logits (B, C, *spatial) -> x0 in diffusion space 2 * softmax(logits) - 1."""
    return 2 * torch.softmax(logits, dim=1) - 1


def segmentation_logits(output: Tensor, x_t: Tensor, abar_t: Tensor, kind: str) -> Tensor:
    """Logits (B, C, *spatial) of the x0 estimate for a network output of the given kind; abar_t (B,). In
    ``working_dtype`` (float32 for a half-precision output under autocast; float64 stays float64)."""
    check_parameterisation(kind)
    if kind == "x0":
        return output.to(working_dtype(output, x_t))
    return diffusion_space_to_probs(predict_x0(output, x_t, abar_t, kind)).log()


def segmentation_x0_denoiser(
    model_fn: Callable[[Tensor, Tensor], Tensor], alphas_cumprod: Tensor, kind: str
) -> Denoiser:
    """Wrap `model_fn(x_t, t)` as `denoise(x_t, t) -> x0_hat` in diffusion space for segmentation (B, C, *spatial);
    x0_hat in at least float32, whatever precision the network ran in."""
    check_parameterisation(kind)

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        abar_t = schedule_at(alphas_cumprod, t, x_t)
        return logits_to_diffusion_space(segmentation_logits(model_fn(x_t, t), x_t, abar_t, kind))

    return denoise
