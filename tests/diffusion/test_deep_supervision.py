"""Deep supervision of the predicted mask: nnU-Net's weights, soft targets for the coarser outputs, and the loss of
a DiffusionSegmenter whose denoiser has auxiliary heads (gradient reaches them; sampling is unchanged)."""

from __future__ import annotations

import pytest
import torch

from nnugen.config import DiffusionSettings, SamplerSettings
from nnugen.diffusion import dice_ce_loss, mask_to_diffusion_space
from nnugen.diffusion.deep_supervision import deep_supervision_loss, deep_supervision_weights, downsampled_target
from nnugen.models.diffusion_segmenter import DiffusionSegmenter
from nnugen.networks import TimeConditionedUNet


def _onehot(shape, classes=3, seed=0):
    labels = torch.randint(0, classes, shape, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.one_hot(labels, classes).movedim(-1, 1).float()


def test_weights_are_nnunets():
    # nnU-Net: 1 / 2**i for its outputs, the coarsest set to 0, normalised; for 5 stages the outputs at full
    # resolution and levels 1, 2 keep 1, 0.5, 0.25.
    torch.testing.assert_close(torch.tensor(deep_supervision_weights([1, 2])), torch.tensor([1, 0.5, 0.25]) / 1.75)
    assert deep_supervision_weights([]) == [1.0]
    with pytest.raises(ValueError, match="levels must be >= 1"):
        deep_supervision_weights([0])


@pytest.mark.parametrize("shape, coarse", [((2, 8, 12), (4, 6)), ((1, 4, 8, 8), (2, 4, 4))])
def test_downsampled_target_is_class_fractions(shape, coarse):
    onehot = _onehot(shape)
    target = downsampled_target(onehot, coarse)
    assert target.shape == (shape[0], 3, *coarse)
    torch.testing.assert_close(target.sum(1), torch.ones(shape[0], *coarse))
    # each coarse voxel holds the mean of the fine voxels it covers
    factor = [f // c for f, c in zip(shape[1:], coarse)]
    block = onehot[0, :, : factor[0], : factor[1]] if len(coarse) == 2 else onehot[0, :, :2, :2, :2]
    torch.testing.assert_close(target[0, :, 0, 0] if len(coarse) == 2 else target[0, :, 0, 0, 0],
                               block.flatten(1).mean(1))
    assert downsampled_target(onehot, shape[1:]) is onehot


def test_loss_without_auxiliary_outputs_is_dice_ce():
    onehot = _onehot((2, 8, 8))
    logits = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(deep_supervision_loss(logits, [], [], onehot), dice_ce_loss(logits, onehot))
    auxiliary = [torch.randn(2, 3, 4, 4)]
    expected = (dice_ce_loss(logits, onehot) + 0.5 * dice_ce_loss(auxiliary[0], downsampled_target(onehot, (4, 4))))
    torch.testing.assert_close(deep_supervision_loss(logits, auxiliary, [1], onehot), expected / 1.5)
    with pytest.raises(ValueError, match="one level each"):
        deep_supervision_loss(logits, auxiliary, [1, 2], onehot)


def _segmenter(deep_supervision: bool) -> DiffusionSegmenter:
    torch.manual_seed(0)
    denoiser = TimeConditionedUNet(1 + 3, 3, features_per_stage=(4, 8, 8, 8), kernel_sizes=((3, 3),) * 4,
                                   strides=((1, 1),) + ((2, 2),) * 3, n_conv_per_stage=(1,) * 4,
                                   n_conv_per_stage_decoder=(1,) * 3, deep_supervision=deep_supervision)
    diffusion = DiffusionSettings(timesteps=5, model_output="x0", recycling=True, mse_weight=0.0,
                                  deep_supervision=deep_supervision)
    return DiffusionSegmenter(denoiser, 3, diffusion, SamplerSettings(name="ddim", steps=2))


def test_segmenter_trains_the_auxiliary_heads_and_samples_as_before():
    plain, supervised = _segmenter(False), _segmenter(True)
    assert supervised.denoiser.auxiliary_levels == (1,)
    # the shared weights are the same; the auxiliary head is extra
    extra = set(supervised.state_dict()) - set(plain.state_dict())
    assert extra and all(key.startswith("denoiser.auxiliary_heads.") for key in extra)
    supervised.load_state_dict(plain.state_dict(), strict=False)
    image, onehot = torch.randn(2, 1, 16, 16), _onehot((2, 16, 16))
    torch.manual_seed(1)
    supervised(image, onehot).backward()
    head = supervised.denoiser.auxiliary_heads[0].weight
    assert head.grad is not None and bool(head.grad.abs().sum() > 0)
    # sampling reads the full-resolution output only: identical to the network without heads
    plain.eval(), supervised.eval()
    with torch.no_grad():
        torch.testing.assert_close(supervised(image), plain(image))
    x_t = mask_to_diffusion_space(onehot)
    full, auxiliary = supervised.denoiser.forward_with_auxiliary(torch.cat([image, x_t], 1), torch.tensor([1, 2]))
    torch.testing.assert_close(full, supervised.denoiser(torch.cat([image, x_t], 1), torch.tensor([1, 2])))
    assert [tuple(a.shape) for a in auxiliary] == [(2, 3, 8, 8)]


def test_setting_needs_the_mask_as_output():
    with pytest.raises(ValueError, match="deep_supervision"):
        DiffusionSettings(model_output="eps", deep_supervision=True)
    with pytest.raises(ValueError, match="deep_supervision"):
        DiffusionSettings(model_output="x0", dice_weight=0.0, ce_weight=0.0, deep_supervision=True)
