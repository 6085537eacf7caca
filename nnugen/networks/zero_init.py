"""Start a conditioned denoiser as the plain network it extends: zero weights on what conditions it.

ControlNet starts its added branches from zero convolutions (Zhang et al. 2023) and DiT its adaptive norms from
zero (adaLN-Zero, Peebles & Xie 2023), so training begins from the unconditioned network's behaviour and learns how
much of the condition to use. For diffusion segmentation, zeroing the first convolution's weights on the noisy-mask
channels and every block's time scale-shift makes the untrained denoiser nnU-Net's segmentation U-Net exactly; the
zeroed weights still receive gradients and learn.
"""

from __future__ import annotations

import torch
from torch import nn

from nnugen.networks.conditioned_block import ConditionedConvBlock
from nnugen.networks.time_conditioned_unet import TimeConditionedUNet


@torch.no_grad()
def zero_input_channels(network: TimeConditionedUNet, first: int) -> None:
    """Zero the first convolution's weights on input channels ``first`` and after (e.g. the noisy mask)."""
    if not 0 <= first < network.in_channels:
        raise ValueError(f"first must lie in [0, {network.in_channels}), got {first}")
    conv = network.encoder[0].blocks[0].conv
    conv.weight[:, first:] = 0
    shortcut = network.encoder[0].shortcut  # residual stages: pooling and a 1x1 conv that sees the input too
    for module in shortcut.modules() if shortcut is not None else ():
        if isinstance(module, nn.modules.conv._ConvNd):
            module.weight[:, first:] = 0


@torch.no_grad()
def zero_time_modulation(network: nn.Module) -> None:
    """Zero every block's timestep scale-shift, so each block starts as ``conv -> norm -> LeakyReLU``."""
    for module in network.modules():
        if isinstance(module, ConditionedConvBlock):
            linear = module.scale_shift[-1]
            linear.weight.zero_()
            linear.bias.zero_()
