"""Mean squared error between the network output and its parameterisation's target (Ho et al. 2020 eq. 14)."""

from __future__ import annotations

from torch import Tensor

from nnugen.diffusion.parameterisation import training_target


def target_mse_loss(output: Tensor, kind: str, x0: Tensor, eps: Tensor, abar_t: Tensor) -> Tensor:
    """Scalar MSE of output (B, C, *spatial) against training_target(kind, x0, eps, abar_t); abar_t (B,)."""
    if output.shape != x0.shape:
        raise ValueError(f"output shape {tuple(output.shape)} must equal x0 shape {tuple(x0.shape)}")
    return (output - training_target(kind, x0, eps, abar_t)).pow(2).mean()
