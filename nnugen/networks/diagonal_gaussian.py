"""The posterior of a KL autoencoder: a Gaussian with diagonal covariance per latent voxel (Kingma & Welling 2014)."""

import torch
from torch import Tensor


class DiagonalGaussian:
    """``q(z | x) = N(mean, diag(exp(logvar)))`` over latents ``(B, C_z, *L)``.

    Args:
        mean: ``(B, C_z, *L)``.
        logvar: log-variance, same shape; clamped to [-30, 20] (as in Rombach et al. 2022) so that ``exp`` stays
            finite.
    """

    def __init__(self, mean: Tensor, logvar: Tensor) -> None:
        if mean.shape != logvar.shape:
            raise ValueError(f"mean {tuple(mean.shape)} and logvar {tuple(logvar.shape)} must have the same shape")
        self.mean = mean
        self.logvar = logvar.clamp(-30.0, 20.0)

    @classmethod
    def from_moments(cls, moments: Tensor) -> "DiagonalGaussian":
        """Split the encoder output ``(B, 2 C_z, *L)`` into mean (first half of the channels) and log-variance."""
        mean, logvar = moments.chunk(2, dim=1)
        return cls(mean, logvar)

    @property
    def std(self) -> Tensor:
        """Standard deviation ``exp(logvar / 2)``."""
        return torch.exp(0.5 * self.logvar)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised draw ``mean + std * eps``, ``eps ~ N(0, I)`` from ``generator`` (Kingma & Welling 2014,
        sec. 2.4): differentiable in mean and logvar."""
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> Tensor:
        """The most likely latent, the mean."""
        return self.mean

    def kl(self) -> Tensor:
        """``KL(q || N(0, I))`` summed over channels and voxels, averaged over the batch (a scalar).

        ``0.5 * sum(mean^2 + var - 1 - logvar)`` (Kingma & Welling 2014, appendix B); computed in float32 so that it
        stays accurate under mixed precision.
        """
        mean, logvar = self.mean.float(), self.logvar.float()
        per_sample = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(dim=1)
        return per_sample.mean()
