"""``LatentGenerator``: sampling from a latent diffusion model (Rombach et al. 2022): the denoiser samples latents
(through ``ImageGenerator``, windowed when larger than its latent patch), they are unscaled and decoded by the frozen
autoencoder, in overlapping chunks when ``decode_chunks`` > 1 (Medical Diffusion's split decoding, exact)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nnugen.models.image_generator import ImageGenerator
from nnugen.models.latent_files import LATENT_FILE  # noqa: F401 - where older code and tests import it from
from nnugen.networks.autoencoder import Autoencoder, latent_sampling_shape
from nnugen.networks.chunked_decoding import decode_chunked


class LatentGenerator(nn.Module):
    def __init__(self, latent_model: ImageGenerator, autoencoder: Autoencoder, scale_factor: float,
                 decode_chunks: int = 1):
        super().__init__()
        if not scale_factor > 0:
            raise ValueError(f"latent scale factor {scale_factor} must be > 0; train the latent model again")
        self.latent_model, self.autoencoder = latent_model, autoencoder
        self.scale_factor, self.decode_chunks = scale_factor, decode_chunks
        self.image_channels = autoencoder.in_channels

    def compiled_parts(self) -> list[nn.Module]:
        """What ``torch.compile`` may compile (compile_policy.py): the latent model's networks and the autoencoder's."""
        return self.latent_model.compiled_parts() + self.autoencoder.compiled_parts()

    @property
    def patch_size(self) -> tuple[int, ...]:
        return tuple(p * d for p, d in zip(self.latent_model.patch_size, self.autoencoder.downsampling))

    def latent_shape(self, spatial_shape: Sequence[int] | None = None) -> tuple[int, ...]:
        """The latents sampled for images of ``spatial_shape``: at least ``spatial / downsampling`` and the latent
        patch per axis."""
        return latent_sampling_shape(tuple(spatial_shape or self.patch_size), self.autoencoder.downsampling,
                                     self.latent_model.patch_size)

    @torch.no_grad()
    def sample(self, batch: int, spatial_shape: Sequence[int] | None = None, condition: Tensor | None = None,
               generator: torch.Generator | None = None, sampler=None, device=None, callback=None) -> Tensor:
        """Images (B, C, *spatial) in [-1, 1]: latents of at least ``spatial / downsampling``, decoded, cropped."""
        if condition is not None:
            raise ValueError("the latent diffusion model is unconditional; --labels-from needs a label-conditioned "
                             "DDPM")
        shape = tuple(spatial_shape or self.patch_size)
        z = self.latent_model.sample(batch, self.latent_shape(shape), generator=generator, sampler=sampler,
                                     device=device, callback=callback)
        image = decode_chunked(self.autoencoder, z / self.scale_factor, self.decode_chunks)
        return self.cropped(image, shape)

    @staticmethod
    def cropped(image: Tensor, shape: Sequence[int]) -> Tensor:
        """Decoded images cut to ``shape`` (from the origin) and clamped to [-1, 1]."""
        return image[(slice(None), slice(None), *(slice(0, s) for s in shape))].clamp(-1, 1)
