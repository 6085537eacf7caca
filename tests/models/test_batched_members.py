"""The ensemble members of ``DiffusionSegmenter`` sampled as one batch equal the one-by-one loop they replace (member
k: its own generator seeded ``seed + k``, its noise drawn first, then the sampler with that generator), for every
sampler, 2D and 3D, whole or chunked. The reference loop is written out here, independently of the segmenter."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from nnugen.config import DiffusionSettings, SamplerSettings
from nnugen.diffusion import diffusion_space_to_probs, sampling_timesteps
from nnugen.models.diffusion_segmenter import DiffusionSegmenter
from nnugen.networks import TimeConditionedUNet
from nnugen.samplers import get_sampler

CLASSES = 3
SPATIAL = {"2d": (8, 8), "3d": (4, 8, 8)}
SAMPLERS = {"ddim": {"eta": 0.0}, "ddim_eta": {"eta": 0.7}, "ddpm": {}, "dpm_solver++": {}}


def segmenter(dim: str, self_conditioning: bool = False) -> DiffusionSegmenter:
    torch.manual_seed(0)
    n = len(SPATIAL[dim])
    denoiser = TimeConditionedUNet(1 + CLASSES * (2 if self_conditioning else 1), CLASSES, features_per_stage=(4, 8),
                                   kernel_sizes=((3,) * n,) * 2, strides=((1,) * n, (2,) * n), n_conv_per_stage=(1, 1),
                                   n_conv_per_stage_decoder=(1,))
    diffusion = DiffusionSettings(timesteps=20, model_output="x0", recycling=False, mse_weight=0.0,
                                  self_conditioning=self_conditioning)
    return DiffusionSegmenter(denoiser, CLASSES, diffusion, SamplerSettings(name="ddim", steps=4, seeds=1)).eval()


def one_by_one(model: DiffusionSegmenter, image: torch.Tensor, name: str, eta: float, seeds: int,
               seed: int) -> torch.Tensor:
    """The loop ``_sample_probabilities`` ran before the members were batched: (S, B, C, *spatial)."""
    timesteps = sampling_timesteps(model.diffusion.timesteps, 4, spacing=SamplerSettings().spacing,
                                   alphas_cumprod=model.host_alphas_cumprod)
    options = {"eta": eta} if name == "ddim" else {}
    members = []
    for k in range(seeds):
        generator = torch.Generator().manual_seed(seed + k)
        noise = torch.randn((image.shape[0], CLASSES, *image.shape[2:]), generator=generator)
        x0 = get_sampler(name)(model.x0_denoiser(image), noise, model.host_alphas_cumprod, timesteps,
                               generator=generator, **options)
        members.append(diffusion_space_to_probs(x0.float()))
    return torch.stack(members)


@pytest.mark.parametrize("dim", SPATIAL)
@pytest.mark.parametrize("config", SAMPLERS)
@pytest.mark.parametrize("members_per_batch", [None, 2])
@torch.no_grad()
def test_batched_members_equal_the_one_by_one_loop(dim, config, members_per_batch):
    model = segmenter(dim)
    name = config.removesuffix("_eta")
    eta = SAMPLERS[config].get("eta", 0.0)
    image = torch.randn((2, 1, *SPATIAL[dim]), generator=torch.Generator().manual_seed(1))
    with model.sampling(SamplerSettings(name=name, steps=4, seeds=5, eta=eta), seed=30):
        batched = model.sample_probabilities(image, members_per_batch)
    reference = one_by_one(model, image, name, eta, seeds=5, seed=30)
    assert batched.shape == (5, 2, CLASSES, *SPATIAL[dim])
    torch.testing.assert_close(batched, reference, rtol=0, atol=1e-5)
    assert not torch.allclose(batched[0], batched[1]), "members must differ: each has its own noise"


@pytest.mark.parametrize("dim", SPATIAL)
@torch.no_grad()
def test_self_conditioned_members_equal_the_one_by_one_loop(dim):
    model = segmenter(dim, self_conditioning=True)
    image = torch.randn((1, 1, *SPATIAL[dim]), generator=torch.Generator().manual_seed(2))
    with model.sampling(SamplerSettings(name="ddpm", steps=4, seeds=3), seed=4):
        batched = model.sample_probabilities(image)
    torch.testing.assert_close(batched, one_by_one(model, image, "ddpm", 0.0, seeds=3, seed=4), rtol=0, atol=1e-5)


@torch.no_grad()
def test_forward_averages_the_batched_members():
    model = segmenter("2d")
    image = torch.randn((1, 1, 8, 8), generator=torch.Generator().manual_seed(3))
    with model.sampling(replace(model.planned_sampler, seeds=3), seed=8):
        logits = model(image)
    expected = one_by_one(model, image, "ddim", 0.0, seeds=3, seed=8).mean(dim=0).clamp_min(1e-8).log()
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


def test_members_per_batch_below_one_is_refused():
    with pytest.raises(ValueError, match="members_per_batch must be at least 1"):
        segmenter("2d").sample_probabilities(torch.zeros(1, 1, 8, 8), 0)


class OutOfMemoryAbove(torch.nn.Module):
    """The denoiser, raising CUDA's out-of-memory error for batches above ``limit`` (as a full GPU would)."""

    def __init__(self, denoiser: torch.nn.Module, limit: int):
        super().__init__()
        self.denoiser, self.limit, self.batches = denoiser, limit, []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return self.denoiser(x, t)


@torch.no_grad()
def test_members_that_do_not_fit_are_halved_until_they_do():
    model = segmenter("2d")
    reference_denoiser = model.denoiser
    image = torch.randn((1, 1, 8, 8), generator=torch.Generator().manual_seed(5))
    with model.sampling(SamplerSettings(name="ddpm", steps=4, seeds=5), seed=2):
        reference = one_by_one(model, image, "ddpm", 0.0, seeds=5, seed=2)
        model.denoiser = OutOfMemoryAbove(reference_denoiser, limit=2)
        batched = model.sample_probabilities(image)
    # 5 members do not fit, nor 3; then chunks of 2, 2 and 1, each for the 4 steps
    assert model.denoiser.batches == [5, 3] + [2] * 4 + [2] * 4 + [1] * 4
    torch.testing.assert_close(batched, reference, rtol=0, atol=1e-5)


def shared_one_by_one(model: DiffusionSegmenter, image: torch.Tensor, name: str, eta: float, seeds: int,
                      seed: int) -> torch.Tensor:
    """The shared first step written out: member k draws its own start from ``seed + k`` and discards it, starts
    from member 0's, and samples on with its own generator; (S, B, C, *spatial)."""
    timesteps = sampling_timesteps(model.diffusion.timesteps, 4, spacing=SamplerSettings().spacing,
                                   alphas_cumprod=model.host_alphas_cumprod)
    options = {"eta": eta} if name == "ddim" else {}
    shape = (image.shape[0], CLASSES, *image.shape[2:])
    start = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    members = []
    for k in range(seeds):
        generator = torch.Generator().manual_seed(seed + k)
        torch.randn(shape, generator=generator)
        x0 = get_sampler(name)(model.x0_denoiser(image), start.clone(), model.host_alphas_cumprod, timesteps,
                               generator=generator, **options)
        members.append(diffusion_space_to_probs(x0.float()))
    return torch.stack(members)


class RowCount(torch.nn.Module):
    """The denoiser, counting the rows of every call."""

    def __init__(self, denoiser: torch.nn.Module):
        super().__init__()
        self.denoiser, self.rows = denoiser, []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.rows.append(x.shape[0])
        return self.denoiser(x, t)


@pytest.mark.parametrize("config", ["ddpm", "ddim_eta"])
@pytest.mark.parametrize("self_conditioning", [False, True])
@torch.no_grad()
def test_a_shared_first_step_starts_every_member_from_member_0_and_calls_the_network_once_for_it(config,
                                                                                                  self_conditioning):
    model = segmenter("2d", self_conditioning)
    name, eta = config.removesuffix("_eta"), SAMPLERS[config].get("eta", 0.0)
    image = torch.randn((2, 1, 8, 8), generator=torch.Generator().manual_seed(6))
    settings = SamplerSettings(name=name, steps=4, seeds=5, eta=eta, shared_first_step=True)
    assert settings.shares_first_step
    network = model.denoiser
    model.denoiser = RowCount(network)
    with model.sampling(settings, seed=11):
        shared = model.sample_probabilities(image)
    # the first call sees one member's 2 rows; the 3 later steps all 5 members: 2 + 3 x 10 rows, not 4 x 10
    assert model.denoiser.rows == [2, 10, 10, 10]
    model.denoiser = network
    torch.testing.assert_close(shared, shared_one_by_one(model, image, name, eta, seeds=5, seed=11), rtol=0,
                               atol=1e-5)
    assert not torch.allclose(shared[1], shared[2]), "members part with the noise of the first step"
    # member 0 is the same member with and without sharing; the others are other draws
    with model.sampling(replace(settings, shared_first_step=False), seed=11):
        unshared = model.sample_probabilities(image)
    torch.testing.assert_close(shared[0], unshared[0], rtol=0, atol=1e-5)
    assert not torch.allclose(shared[1], unshared[1])
    # one member at a time (the member-by-member path: first_member=k) samples the same members
    for k in (0, 3):
        with model.sampling(replace(settings, seeds=1), seed=11, first_member=k):
            torch.testing.assert_close(model.sample_probabilities(image)[0], shared[k], rtol=0, atol=1e-5)
    # chunked, each chunk shares its own first call
    model.denoiser = RowCount(network)
    with model.sampling(settings, seed=11):
        torch.testing.assert_close(model.sample_probabilities(image, members_per_batch=3), shared, rtol=0, atol=1e-5)
    assert model.denoiser.rows == [2, 6, 6, 6, 2, 4, 4, 4]


@pytest.mark.parametrize("config", ["ddim", "dpm_solver++"])
@torch.no_grad()
def test_deterministic_samplers_do_not_share_a_first_step(config):
    # their members differ only by their start: sharing it would make them one member
    model = segmenter("2d")
    settings = SamplerSettings(name=config, steps=4, seeds=3, shared_first_step=True)
    assert not settings.shares_first_step
    image = torch.randn((1, 1, 8, 8), generator=torch.Generator().manual_seed(7))
    with model.sampling(settings, seed=2):
        batched = model.sample_probabilities(image)
    torch.testing.assert_close(batched, one_by_one(model, image, config, 0.0, seeds=3, seed=2), rtol=0, atol=1e-5)


def test_first_member_below_zero_is_refused():
    with pytest.raises(ValueError, match="first_member must be at least 0"):
        with segmenter("2d").sampling(first_member=-1):
            pass
