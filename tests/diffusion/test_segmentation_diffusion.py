"""Segmentation in diffusion space and its Dice + CE loss, 2D and 3D."""

import pytest
import torch
import torch.nn.functional as F

from nnugen.diffusion import (
    PARAMETERISATIONS,
    alphas_cumprod,
    dice_ce_loss,
    diffusion_space_to_probs,
    logits_to_diffusion_space,
    make_betas,
    mask_to_diffusion_space,
    q_sample,
    segmentation_logits,
    segmentation_x0_denoiser,
    soft_dice_loss,
    training_target,
)

SHAPES = [(2, 3, 8, 8), (2, 3, 4, 6, 5)]


def _onehot(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    labels = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=torch.Generator().manual_seed(seed))
    return F.one_hot(labels, shape[1]).movedim(-1, 1).float()


@pytest.mark.parametrize("shape", SHAPES)
def test_mask_round_trip(shape: tuple[int, ...]) -> None:
    onehot = _onehot(shape)
    x = mask_to_diffusion_space(onehot)
    assert set(x.unique().tolist()) <= {-1.0, 1.0}
    torch.testing.assert_close(diffusion_space_to_probs(x).argmax(1), onehot.argmax(1))
    torch.testing.assert_close(diffusion_space_to_probs(x), onehot, rtol=0, atol=1e-5)
    assert mask_to_diffusion_space(onehot.long()).dtype == torch.float32


def test_logits_map_into_the_diffusion_range() -> None:
    x = logits_to_diffusion_space(torch.randn(2, 4, 5, 5) * 10)
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    torch.testing.assert_close(((x + 1) / 2).sum(1), torch.ones(2, 5, 5))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", PARAMETERISATIONS)
def test_segmentation_denoiser_recovers_the_mask(shape: tuple[int, ...], kind: str) -> None:
    abar = alphas_cumprod(make_betas("linear", 100))
    onehot = _onehot(shape)
    x0 = mask_to_diffusion_space(onehot)
    eps = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([3, 60])
    x_t = q_sample(x0, t, abar, eps)

    def model_fn(x: torch.Tensor, t_: torch.Tensor) -> torch.Tensor:
        # Exact outputs: for "x0" the logits of a confident prediction, else the exact eps / v.
        return onehot * 20.0 if kind == "x0" else training_target(kind, x0, eps, abar[t_])

    x0_hat = segmentation_x0_denoiser(model_fn, abar, kind)(x_t, t)
    assert x0_hat.shape == shape
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=1e-3)
    logits = segmentation_logits(model_fn(x_t, t), x_t, abar[t], kind)
    assert float(dice_ce_loss(logits, onehot)) < 1e-3


@pytest.mark.parametrize("shape", SHAPES)
def test_dice_ce_values(shape: tuple[int, ...]) -> None:
    onehot = _onehot(shape)
    assert float(soft_dice_loss(onehot * 50.0, onehot)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_dice_loss(-onehot * 50.0, onehot)) == pytest.approx(1.0, abs=1e-3)
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(2), requires_grad=True)
    ce = F.cross_entropy(logits, onehot.argmax(1))
    dice = soft_dice_loss(logits, onehot)
    torch.testing.assert_close(dice_ce_loss(logits, onehot, 0.0, 1.0), ce)
    torch.testing.assert_close(dice_ce_loss(logits, onehot, 2.0, 0.5), 2.0 * dice + 0.5 * ce)
    dice_ce_loss(logits, onehot).backward()
    assert logits.grad is not None and bool(logits.grad.abs().sum() > 0)


def test_soft_dice_matches_nnunet() -> None:
    dice_module = pytest.importorskip("nnunetv2.training.loss.dice")
    onehot = _onehot(SHAPES[1])
    logits = torch.randn(SHAPES[1], generator=torch.Generator().manual_seed(3))
    nnunet_loss = dice_module.MemoryEfficientSoftDiceLoss(
        apply_nonlin=lambda x: torch.softmax(x, 1), batch_dice=True, do_bg=False, smooth=1e-5, ddp=False
    )
    # nnU-Net returns -Dice; ours is 1 - Dice (same gradient).
    torch.testing.assert_close(soft_dice_loss(logits, onehot), 1 + nnunet_loss(logits, onehot))


def test_bad_inputs_raise() -> None:
    onehot = _onehot(SHAPES[0])
    with pytest.raises(ValueError):
        dice_ce_loss(onehot[:, :1], onehot[:, :1])
    with pytest.raises(ValueError):
        dice_ce_loss(onehot, onehot[:, :2])
    with pytest.raises(ValueError):
        dice_ce_loss(onehot, onehot, 0.0, 0.0)
    with pytest.raises(ValueError):
        segmentation_logits(onehot, onehot, torch.ones(2), "score")
