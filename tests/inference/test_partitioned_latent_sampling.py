"""The latent diffusion model sampled by several gloo processes (issue 19, part 1): the partition cuts the latents,
each rank decodes the image of its own latent box, and rank 0's image equals one process's, which equals
``LatentGenerator.sample`` with the same positional noise; the decoded box of a latent equals the whole decode."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
from gloo_ranks import ranks_of

from nnugen.config import DiffusionSettings, GenerationSettings, SamplerSettings
from nnugen.diffusion.positional_noise import PositionalNoise
from nnugen.diffusion.volume_partition import partition_volume
from nnugen.inference.partitioned_sampling import RankPlace, sample_partitioned, sampled_volume
from nnugen.models.image_generator import ImageGenerator
from nnugen.models.latent_generator import LatentGenerator
from nnugen.models.sliding_windows import nnunet_windows
from nnugen.networks import TimeConditionedUNet
from nnugen.networks.autoencoder import Autoencoder
from nnugen.networks.chunked_decoding import decode_box

WORLD = 2
SEED = 5
IMAGE = (36, 24)  # sampled image shape; latents 18 x 12 (the autoencoder halves each axis), latent patch 8 x 8
SAMPLER = SamplerSettings(name="ddpm", steps=3)


def _generator() -> LatentGenerator:
    torch.manual_seed(0)
    denoiser = TimeConditionedUNet(3, 3, features_per_stage=(8, 16), kernel_sizes=((3, 3),) * 2,
                                   strides=((1, 1), (2, 2)), n_conv_per_stage=(1, 1), n_conv_per_stage_decoder=(1,),
                                   norm="group", time_embed_dim=16, attention_stages=(), attention_heads=1,
                                   dropout=0.0)
    latent_model = ImageGenerator(denoiser, 3, 2, (8, 8), DiffusionSettings(timesteps=50), SAMPLER,
                                  GenerationSettings(mode="image"), 0.99)
    autoencoder = Autoencoder(1, (8, 8), ((1, 1), (2, 2)), latent_channels=3)
    return LatentGenerator(latent_model, autoencoder, scale_factor=0.7).eval()


def _sample(grid: tuple[int, ...], rank: int, world: int):
    generator = _generator()
    volume, patch = sampled_volume(generator, IMAGE, (16, 16))
    partition = partition_volume(volume, patch, nnunet_windows(volume, patch)[0], grid)
    place = RankPlace(rank, world, torch.device("cpu"), timedelta(seconds=60), 1)
    with torch.no_grad():
        return sample_partitioned(generator, partition, place, None, SEED, SAMPLER, {}, shape=IMAGE)


def _rank(rank: int) -> dict:
    return {"image": _sample((2, 1), rank, WORLD)}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    return ranks_of(_rank, WORLD, tmp_path_factory, "latent_partition")


def test_the_partition_cuts_the_latents():
    generator = _generator()
    assert sampled_volume(generator, IMAGE, (16, 16)) == ((18, 12), (8, 8))


def test_one_piece_is_the_latent_generators_own_sample():
    generator = _generator()
    one = _sample((1, 1), 0, 1)
    noise = PositionalNoise(SEED, (18, 12))
    with torch.no_grad():
        own = generator.sample(1, IMAGE, generator=noise, sampler=SAMPLER)
    assert one.shape == (1, 1, *IMAGE)
    torch.testing.assert_close(one, own, atol=1e-6, rtol=0)


def test_two_processes_give_the_image_of_one(ranks):
    assert ranks[1]["image"] is None
    one = _sample((1, 1), 0, 1)
    assert float(one.std()) > 1e-3  # an image, not a constant that any split reproduces
    torch.testing.assert_close(ranks[0]["image"], one, atol=1e-5, rtol=0)


def test_a_latent_box_decodes_to_its_part_of_the_whole_decode():
    autoencoder = _generator().autoencoder
    z = torch.randn(1, 3, 18, 12, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = autoencoder.decode(z)
        box = decode_box(autoencoder, z, [(4, 11), (0, 12)])
        short = decode_box(autoencoder, z, [(4, 11), (0, 12)], margin=(0, 0))
    torch.testing.assert_close(box, whole[..., 8:22, :], atol=1e-5, rtol=0)
    assert (short - whole[..., 8:22, :]).abs().max() > 1e-3  # without the margin, seams: the test can tell
