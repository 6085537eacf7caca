"""The latent codec of a latent anomaly model (``anomaly.space: latent``): a frozen autoencoder and the latents' scale
factor (1 / std of the training latents, Rombach et al. 2022 sec. 4.3.2), with the padding and cropping that let it
encode any input size. The codec holds references only: the autoencoder and the scale stay the anomaly model's
(state-dict keys ``autoencoder.*`` and ``latent_scale``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nnugen.networks.autoencoder import Autoencoder

NO_LATENT_SCALE = ("this latent anomaly model has no latent scale factor; train it (nnugen_train ... --task anomaly) "
                   "before predicting")


@dataclass(frozen=True)
class LatentCodec:
    """``encode``: model-range image (B, C, *S) -> scaled latents (B, C_z, *L); ``decode``: back, cropped to S."""

    autoencoder: Autoencoder
    scale: Tensor
    """() the latents' scale factor (the model's ``latent_scale`` buffer); must be > 0."""
    latent_patch: Sequence[int]
    """The denoiser's patch in latent voxels: inputs are padded to at least this times the downsampling."""

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(NO_LATENT_SCALE)

    def encode(self, x: Tensor) -> Tensor:
        """Model-range image (B, C, *S) -> scaled latents; S is padded (edge values) up to a multiple of the
        downsampling, and to at least the latent patch times the downsampling, first."""
        sizes = zip(x.shape[2:], self.autoencoder.downsampling, self.latent_patch)
        targets = [max(-(-size // f), p) * f for size, f, p in sizes]
        pad = [p for size, target in zip(reversed(x.shape[2:]), reversed(targets)) for p in (0, target - size)]
        padded = torch.nn.functional.pad(x, pad, mode="replicate") if any(pad) else x
        return self.autoencoder.encode(padded).mode() * self.scale

    def decode(self, z: Tensor, spatial: Sequence[int]) -> Tensor:
        """Scaled latents -> model-range image (B, C, *spatial), clamped to [-1, 1] and cropped to ``spatial``."""
        image = self.autoencoder.decode(z / self.scale).clamp(-1, 1)
        return image[(slice(None), slice(None), *(slice(0, s) for s in spatial))]
