"""Mean squared error between the network output and its parameterisation's target (Ho et al. 2020 eq. 14)."""

from __future__ import annotations

from torch import Tensor

from nnugen.diffusion.parameterisation import training_target


def target_mse_loss(output: Tensor, kind: str, x0: Tensor, eps: Tensor, abar_t: Tensor,
                    sample_weights: Tensor | None = None) -> Tensor:
    """Scalar MSE of output (B, C, *spatial) against training_target(kind, x0, eps, abar_t); abar_t (B,).

    ``sample_weights`` (B,), e.g. loss_weighting.min_snr_weights: the mean over samples of weight x that sample's
    MSE; None is the plain mean (all weights 1)."""
    if output.shape != x0.shape:
        raise ValueError(f"output shape {tuple(output.shape)} must equal x0 shape {tuple(x0.shape)}")
    squared = (output - training_target(kind, x0, eps, abar_t)).pow(2)
    if sample_weights is None:
        return squared.mean()
    if sample_weights.shape != output.shape[:1]:
        raise ValueError(f"sample_weights must have shape ({output.shape[0]},), one per sample, got "
                         f"{tuple(sample_weights.shape)}")
    per_sample = squared.flatten(1).mean(dim=1)
    return (sample_weights.to(per_sample) * per_sample).mean()
