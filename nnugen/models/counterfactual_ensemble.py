"""The counterfactuals of an anomaly model: every strength x seed of one input, and their residual maps.

A diffusion model of healthy images turns a partially noised input back into a pseudo-healthy one (pDDPM / cDDPM,
Behrendt et al. 2023; AnoDDPM, Wyatt et al. 2022; THOR, Bercea et al. 2024); ``seeded_counterfactuals`` denoises all
strengths and seeds, ``anomaly.max_batch`` samples per denoiser call, with deterministic DDIM from the generator's
EMA weights, windowed over inputs larger than the patch (``volume_denoiser``). Seed k draws its noise from a
``torch.Generator`` seeded with ``seed + k``, so an input always gets the same counterfactuals.

In latent mode the diffusion runs on the scaled latents (``LatentCodec``); the counterfactuals are decoded and
compared with the autoencoded input decode(encode(x)), not with x, so the autoencoder's reconstruction error stays
out of the map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nnugen.anomaly import anatomy_condition, residual_map, seed_averaged_residuals
from nnugen.anomaly.counterfactual import seeded_counterfactuals
from nnugen.config import AnomalySettings
from nnugen.diffusion.parameterisation import x0_denoiser
from nnugen.models.image_generator import ImageGenerator, volume_denoiser
from nnugen.models.latent_codec import LatentCodec
from nnugen.models.sampling import SamplingRequest


@dataclass(frozen=True)
class CounterfactualEnsemble:
    """The counterfactuals of one input, in the model's [-1, 1]."""

    reference: Tensor
    """(B, C, *spatial) what the counterfactuals are compared with: the input, or in latent mode its autoencoded
    version."""
    members: Tensor
    """(M, B, C, *spatial) M = seeds x strengths, seed-major: all strengths of seed 0 first."""
    seeds: int

    def residuals(self) -> Tensor:
        """(M, B, 1, *spatial) the residual map of every member."""
        return torch.stack([residual_map(self.reference, member) for member in self.members])

    def strength_maps(self, seed_average: str) -> Tensor:
        """The maps to average over strengths, (S, B, 1, *spatial) or (M, ...): per strength the residual of the seeds'
        mean counterfactual (``seed_average`` "counterfactual"), or every member's residual ("residual")."""
        if seed_average == "counterfactual":
            return seed_averaged_residuals(self.reference, self.members, self.seeds)
        return self.residuals()


@torch.no_grad()
def counterfactual_ensemble(generator: ImageGenerator, image: Tensor, anatomy: Tensor | None,
                            codec: LatentCodec | None, anomaly: AnomalySettings, strengths: Sequence[float],
                            request: SamplingRequest) -> CounterfactualEnsemble:
    """The counterfactuals of ``image`` (B, C, *spatial, model range) at ``strengths`` x ``request.sampler.seeds``
    seeds, ``request.sampler.steps`` DDIM steps, base seed ``request.seed``. ``anatomy`` (B, 1, *spatial) bool is the
    condition of an anatomy adapter (ignored without one); ``codec`` for a latent model, else None."""
    seeds, steps = request.sampler.seeds, request.sampler.steps
    start = codec.encode(image) if codec is not None else image
    reference = codec.decode(start, image.shape[2:]) if codec is not None else image
    # the anatomy adapter's condition: the mask's one-hot, cropped with every window of the volume denoiser
    condition = anatomy_condition(anatomy) if generator.adapter is not None else None
    clip = None if codec is not None else (-1.0, 1.0)  # latents are not confined to [-1, 1]: no clipping

    def x0(x_t: Tensor, t: Tensor, window_condition: Tensor | None) -> Tensor:
        return x0_denoiser(lambda x, s: generator.model_output(x, s, window_condition, use_ema=True),
                           generator.alphas_cumprod, generator.diffusion.model_output, clip=clip)(x_t, t)

    def denoise(x_t: Tensor, t: Tensor) -> Tensor:
        # the strengths and seeds ride on the batch axis, member after member: each gets its tile's condition
        repeats = x_t.shape[0] // start.shape[0]
        member_condition = None if condition is None else condition.repeat(repeats, *(1,) * (condition.ndim - 1))
        return volume_denoiser(x0, member_condition, generator.patch_size)(x_t, t)

    generators = [torch.Generator(device=image.device).manual_seed(request.seed + k) for k in range(seeds)]
    members = seeded_counterfactuals(denoise, start, generator.host_alphas_cumprod, strengths, steps, anomaly.noise,
                                     anomaly.inversion, generators, anomaly.max_batch, request.sampler.spacing,
                                     inversion_iterations=anomaly.inversion_iterations,
                                     inversion_tolerance=anomaly.inversion_tolerance).float()
    if codec is not None:
        members = torch.stack([codec.decode(member, image.shape[2:]) for member in members])
    return CounterfactualEnsemble(reference, members, seeds)
