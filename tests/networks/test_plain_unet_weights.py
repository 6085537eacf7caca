"""A trained nnU-Net's PlainConvUNet mapped into the time-conditioned denoiser computes the same logits, deep
supervision heads included, for any noisy mask and timestep; a network that does not match is refused by layer."""

from __future__ import annotations

import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnugen.networks import TimeConditionedUNet
from nnugen.networks.plain_unet_weights import IncompatibleWeights, denoiser_key, denoiser_state_from_plain_unet

CASES = {
    # dim: features, kernels, strides, n_conv, patch (anisotropic 3D as nnU-Net plans it for thick slices)
    2: ([8, 16, 32, 32], [[3, 3]] * 4, [[1, 1], [2, 2], [2, 2], [2, 2]], [2, 2, 2, 2], (32, 32)),
    3: ([8, 16, 32, 32, 32], [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
        [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2]], [2, 1, 2, 2, 2], (8, 32, 32)),
}


def plain_unet(dim: int, image_channels: int, classes: int, n_conv_decoder: list[int] | None = None) -> PlainConvUNet:
    """nnU-Net's network as nnU-Net's plans build it (instance norm, LeakyReLU, deep supervision), random weights."""
    features, kernels, strides, n_conv, _ = CASES[dim]
    conv, norm = (nn.Conv2d, nn.InstanceNorm2d) if dim == 2 else (nn.Conv3d, nn.InstanceNorm3d)
    network = PlainConvUNet(image_channels, len(features), features, conv, kernels, strides, n_conv, classes,
                            n_conv_decoder or [1] * (len(features) - 1), True, norm, {"eps": 1e-5, "affine": True},
                            None, None, nn.LeakyReLU, {"inplace": True}, deep_supervision=True)
    with torch.no_grad():  # trained norms are not the identity: random affine parameters everywhere
        for parameter in network.parameters():
            parameter.copy_(torch.randn_like(parameter) * 0.3)
    return network.eval()


def denoiser(dim: int, in_channels: int, classes: int, **extra) -> TimeConditionedUNet:
    features, kernels, strides, n_conv, _ = CASES[dim]
    arguments = {"residual_stages": False, "deep_supervision": True, "attention_stages": (len(features) - 1,),
                 "attention_heads": 2, "n_conv_per_stage_decoder": [1] * (len(features) - 1), **extra}
    return TimeConditionedUNet(in_channels, classes, features, kernels, strides, n_conv, **arguments).eval()


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("self_conditioning", [False, True])
def test_mapped_denoiser_computes_nnunets_logits_for_any_noisy_mask_and_timestep(dim, self_conditioning):
    torch.manual_seed(0)
    image_channels, classes = 2, 3
    nnunet = plain_unet(dim, image_channels, classes)
    mask_channels = classes * (2 if self_conditioning else 1)
    network = denoiser(dim, image_channels + mask_channels, classes)
    network.load_state_dict(denoiser_state_from_plain_unet(network, nnunet.state_dict(), image_channels))
    patch = CASES[dim][4]
    image = torch.randn(2, image_channels, *patch)
    with torch.no_grad():
        expected = nnunet(image)
        for t in (torch.tensor([0, 999]), torch.tensor([517, 3])):
            noisy_mask = torch.randn(2, mask_channels, *patch) * 3
            output, auxiliary = network.forward_with_auxiliary(torch.cat([image, noisy_mask], 1), t)
            torch.testing.assert_close(output, expected[0], rtol=0, atol=1e-5)
            assert network.auxiliary_levels == tuple(range(1, len(CASES[dim][0]) - 2))
            for level, head_output in zip(network.auxiliary_levels, auxiliary):
                torch.testing.assert_close(head_output, expected[level], rtol=0, atol=1e-5)


def test_the_zeroed_parts_still_learn():
    """Zero starts, not frozen weights: the time scale-shift and the mask channels get gradients."""
    torch.manual_seed(1)
    nnunet = plain_unet(2, 1, 2)
    network = denoiser(2, 3, 2).train()
    network.load_state_dict(denoiser_state_from_plain_unet(network, nnunet.state_dict(), 1))
    output = network(torch.randn(2, 3, 32, 32), torch.tensor([10, 500]))
    (output * torch.randn_like(output)).sum().backward()
    first = network.encoder[0].blocks[0]
    assert first.conv.weight.grad[:, 1:].abs().sum() > 0
    assert first.scale_shift[-1].weight.grad.abs().sum() > 0


def test_key_names_follow_nnunets_layout():
    levels = (1, 2)
    assert denoiser_key("encoder.stages.2.0.convs.1.norm.weight", 5, levels) == "encoder.2.blocks.1.norm.weight"
    assert denoiser_key("decoder.stages.0.convs.0.conv.bias", 5, levels) == "decoder.0.stage.blocks.0.conv.bias"
    assert denoiser_key("decoder.transpconvs.3.weight", 5, levels) == "decoder.3.upsample.weight"
    assert denoiser_key("decoder.seg_layers.3.weight", 5, levels) == "head.weight"
    assert denoiser_key("decoder.seg_layers.2.bias", 5, levels) == "auxiliary_heads.0.bias"  # level 1
    assert denoiser_key("decoder.seg_layers.1.bias", 5, levels) == "auxiliary_heads.1.bias"  # level 2
    assert denoiser_key("decoder.seg_layers.0.bias", 5, levels) is None  # coarsest: zero weight in nnU-Net
    assert denoiser_key("decoder.encoder.stages.0.0.convs.0.conv.weight", 5, levels) is None
    assert denoiser_key("encoder.stages.0.0.convs.0.all_modules.0.weight", 5, levels) is None
    assert denoiser_key("encoder.stem.convs.0.conv.weight", 5, levels) == "encoder.stem.convs.0.conv.weight"


def test_a_different_network_is_refused_naming_the_first_layer():
    nnunet = plain_unet(2, 1, 2)
    wider = TimeConditionedUNet(3, 2, [8, 16, 64, 32], CASES[2][1], CASES[2][2], CASES[2][3], residual_stages=False,
                                n_conv_per_stage_decoder=[1, 1, 1])
    with pytest.raises(IncompatibleWeights, match=r"^ckpt: layer encoder\.stages\.2\.0\.convs\.0\.conv\.weight has "
                                                  r"shape \(32, 16, 3, 3\), the planned denoiser's"):
        denoiser_state_from_plain_unet(wider, nnunet.state_dict(), 1, source="ckpt")
    with pytest.raises(IncompatibleWeights, match="needs \\(8, 2, 3, 3\\) for its image channels"):
        denoiser_state_from_plain_unet(denoiser(2, 4, 2), nnunet.state_dict(), 2, source="ckpt")
    residual = denoiser(2, 3, 2, residual_stages=True)
    with pytest.raises(IncompatibleWeights, match="residual_stages false"):
        denoiser_state_from_plain_unet(residual, nnunet.state_dict(), 1)
    deeper_decoder = plain_unet(2, 1, 2, n_conv_decoder=[2, 1, 1])
    with pytest.raises(IncompatibleWeights, match=r"layer decoder\.stages\.0\.convs\.1\.conv\.weight has no "
                                                  "counterpart"):
        denoiser_state_from_plain_unet(denoiser(2, 3, 2), deeper_decoder.state_dict(), 1)
    missing = {k: v for k, v in nnunet.state_dict().items() if not k.startswith("decoder.transpconvs.1.")}
    with pytest.raises(IncompatibleWeights, match=r"has no weights for the planned denoiser's decoder\.1\.upsample"):
        denoiser_state_from_plain_unet(denoiser(2, 3, 2), missing, 1)
