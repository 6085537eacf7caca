"""What two gloo ranks must agree on for the objective not to depend on the number of processes, or to not hang:

- the segmentation Dice, summed over the ranks before dividing as nnU-Net's ``ddp=True`` Dice: with each rank
  holding half a batch, the loss equals one process's batch Dice of the whole batch, and DDP's averaged gradient
  equals that process's gradient;
- the self-conditioning coin: ranks seeded differently run the extra pass on the same steps;
- the latent scale factor of the LDM trainer, estimated by rank 0 and used by all; the trainer reads the network's
  ``image_channels`` through the DDP wrapper (an AttributeError before);
- a value computed on rank 0 that fails fails on every rank, instead of leaving the others waiting."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
import torch
from gloo_ranks import ranks_of

from nnugen.config import DiffusionSettings, SamplerSettings
from nnugen.diffusion import dice_ce_loss, soft_dice_loss
from nnugen.models.diffusion_segmenter import DiffusionSegmenter
from nnugen.networks import TimeConditionedUNet
from nnugen.trainers.ddp import from_rank_zero, wrap_ddp

WORLD = 2
BATCH = 4  # two samples per rank
STEPS = 12


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(BATCH, 2, 8, 8, generator=generator)
    labels = torch.randint(0, 3, (BATCH, 8, 8), generator=generator)
    return image, torch.nn.functional.one_hot(labels, 3).movedim(-1, 1).float()


def _network() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Conv2d(2, 3, 3, padding=1)


def _segmenter() -> DiffusionSegmenter:
    torch.manual_seed(0)
    denoiser = TimeConditionedUNet(1 + 3 + 3, 3, features_per_stage=(4, 8), kernel_sizes=((3, 3),) * 2,
                                   strides=((1, 1), (2, 2)), n_conv_per_stage=(1, 1), n_conv_per_stage_decoder=(1,))
    diffusion = DiffusionSettings(timesteps=5, model_output="x0", recycling=False, self_conditioning=True,
                                  mse_weight=0.0)
    return DiffusionSegmenter(denoiser, 3, diffusion, SamplerSettings(name="ddim", steps=2))


class _Latent(torch.nn.Module):
    image_channels = 4

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 2)


def _dice(rank: int) -> dict:
    image, onehot = _batch()
    mine = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    network = wrap_ddp(_network(), torch.device("cpu"), False)
    logits = network(image[mine])
    results = {"over_ranks": soft_dice_loss(logits.detach(), onehot[mine], over_ranks=True),
               "this_rank": soft_dice_loss(logits.detach(), onehot[mine])}
    dice_ce_loss(logits, onehot[mine], over_ranks=True).backward()
    results["grads"] = [p.grad.clone() for p in network.parameters()]
    del network
    return results


def _coins(rank: int) -> list[int]:
    """Self-conditioning passes per training step (0 or 1) of ranks seeded differently."""
    segmenter = _segmenter()
    torch.manual_seed(100 + rank)
    image, onehot = torch.randn(1, 1, 8, 8), torch.nn.functional.one_hot(torch.randint(0, 3, (1, 8, 8)), 3)
    passes = []
    segmenter.denoiser.register_forward_pre_hook(lambda module, args: passes.append(1))  # the extra pass only
    per_step = []
    for _ in range(STEPS):
        before = len(passes)
        segmenter(image, onehot.movedim(-1, 1).float())
        per_step.append(len(passes) - before)
    return per_step


def _ldm(rank: int) -> dict:
    from nnugen.trainers.nnugen_ldm_trainer import SCALE_BATCHES, NnugenLDMTrainer

    trainer = NnugenLDMTrainer.__new__(NnugenLDMTrainer)
    trainer.is_ddp, trainer.device = True, torch.device("cpu")
    trainer.network = wrap_ddp(_Latent(), trainer.device, False)
    trainer.configuration_manager = SimpleNamespace(
        patch_size=(8, 8), configuration={"nnugen": {"tasks": {"autoencoder": {"autoencoder": {}}}}})
    trainer.autoencoder = SimpleNamespace(latent_channels=4, latent_shape=lambda patch: (2, 2),
                                          encode=lambda x: SimpleNamespace(mode=lambda: x))
    trainer.intensity = SimpleNamespace(to_model=lambda x: x)
    generator = torch.Generator().manual_seed(rank)
    batches = [{"data": torch.randn(2, 1, 8, 8, generator=generator) * (rank + 1)} for _ in range(SCALE_BATCHES)]
    trainer.dataloader_train = itertools.cycle(batches)
    results = {"wrapper_has_channels": hasattr(trainer.network, "image_channels")}
    trainer.check_autoencoder()  # read through the wrapper this raised AttributeError
    results["shared"] = from_rank_zero(trainer.estimate_scale_factor)
    results["own"] = trainer.estimate_scale_factor()
    del trainer
    return results


def _failing(rank: int) -> str:
    def compute() -> float:
        raise ValueError("no latents")

    try:
        from_rank_zero(compute)
    except (ValueError, RuntimeError) as error:
        return f"{type(error).__name__}: {error}"
    return "no error"


def _rank(rank: int) -> dict:
    return {"dice": _dice(rank), "coins": _coins(rank), "ldm": _ldm(rank), "failing": _failing(rank)}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    return ranks_of(_rank, WORLD, tmp_path_factory, "ddp_objective", timeout_s=None, threads=None)


def test_the_dice_over_ranks_is_the_batch_dice_of_the_whole_batch(ranks):
    image, onehot = _batch()
    network = _network()
    logits = network(image)
    whole = soft_dice_loss(logits.detach(), onehot)
    dice_ce_loss(logits, onehot).backward()
    for rank in ranks:
        torch.testing.assert_close(rank["dice"]["over_ranks"], whole)
        assert not torch.allclose(rank["dice"]["this_rank"], whole)  # a rank's own half differs: the test can tell
        for ddp_grad, parameter in zip(rank["dice"]["grads"], network.parameters()):
            torch.testing.assert_close(ddp_grad, parameter.grad)


def test_outside_ddp_the_dice_is_this_process_batch_dice():
    image, onehot = _batch()
    logits = _network()(image)
    assert torch.equal(soft_dice_loss(logits, onehot, over_ranks=True), soft_dice_loss(logits, onehot))


def test_ranks_seeded_differently_draw_the_same_self_conditioning_coins(ranks):
    first, second = (rank["coins"] for rank in ranks)
    assert first == second
    assert set(first) == {0, 1}, "both sides of the coin should occur in 12 steps"


def test_the_latent_scale_factor_is_rank_zeros_on_every_rank(ranks):
    first, second = (rank["ldm"] for rank in ranks)
    assert not first["wrapper_has_channels"]
    assert first["shared"] == second["shared"] == first["own"]
    assert second["own"] == pytest.approx(first["own"] / 2, rel=0.3)  # rank 1's own batches would scale otherwise


def test_an_error_on_rank_zero_reaches_every_rank(ranks):
    assert ranks[0]["failing"] == "ValueError: no latents"
    assert ranks[1]["failing"] == "RuntimeError: ValueError on rank 0: no latents"
