"""A trained nnU-Net's weights as the starting point of the time-conditioned denoiser.

The segmentation denoiser is laid out as nnU-Net's ``PlainConvUNet`` (Isensee et al. 2021): at zero time modulation
and zero weights on the noisy-mask input channels it computes exactly the plain U-Net's logits (zero_init.py). So a
trained nnU-Net maps into it one to one: every conv, norm, transposed conv and segmentation head of the checkpoint
goes to its counterpart; what nnU-Net's network lacks starts where it changes nothing: the first convolution's
weights on the noisy mask (and self-conditioning) channels, every block's time scale-shift and the output projection
of every self-attention block start at zero (the attention block is ``x + proj(...)``, so it is the identity), and
the timestep embedding keeps its initial weights (it only feeds the zeroed scale-shifts). Fine-tuning then starts from
nnU-Net's segmentation, as ControlNet starts from the frozen model's (Zhang et al. 2023).

nnU-Net's state-dict names (``dynamic_network_architectures`` 0.4, ``PlainConvUNet``)::

    encoder.stages.S.K.convs.I.{conv,norm}.*   ->  encoder.S.blocks.I.{conv,norm}.*
    decoder.stages.D.convs.J.{conv,norm}.*     ->  decoder.D.stage.blocks.J.{conv,norm}.*
    decoder.transpconvs.D.*                    ->  decoder.D.upsample.*
    decoder.seg_layers.(n-2).*                 ->  head.*            (full resolution)
    decoder.seg_layers.(n-2-L).*               ->  auxiliary_heads.A.*  (deep supervision at level L)

``K`` is the block's place in the stage's ``Sequential`` (0 without a pooling op); the ``all_modules.*`` and
``decoder.encoder.*`` entries repeat the same tensors and are skipped. ``seg_layers.0`` (the coarsest level, whose
deep-supervision weight is zero in nnU-Net) has no counterpart and is skipped too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch
from torch import Tensor

from nnugen.networks.time_conditioned_unet import TimeConditionedUNet

_ENCODER = re.compile(r"encoder\.stages\.(\d+)\.\d+\.convs\.(\d+)\.(conv|norm)\.(\w+)$")
_DECODER = re.compile(r"decoder\.stages\.(\d+)\.convs\.(\d+)\.(conv|norm)\.(\w+)$")
_UPSAMPLE = re.compile(r"decoder\.transpconvs\.(\d+)\.(\w+)$")
_HEAD = re.compile(r"decoder\.seg_layers\.(\d+)\.(\w+)$")
_REPEATS = re.compile(r"(^decoder\.encoder\.|\.all_modules\.)")
_ZERO_START = re.compile(r"(\.scale_shift\.\d+|\.attention\.proj)\.(weight|bias)$")
"""Denoiser parameters nnU-Net's network lacks that start at zero: time scale-shifts, attention output projections."""
_LEFT_AS_BUILT = re.compile(r"^time_embedding\.|\.attention\.(?!proj\.)")
"""Denoiser parameters nnU-Net's network lacks whose values do not matter once the above are zero."""


class IncompatibleWeights(ValueError):
    """The checkpoint's network is not the planned denoiser's plain U-Net; the message names the first layer."""


def denoiser_key(nnunet_key: str, n_stages: int, auxiliary_levels: tuple[int, ...]) -> str | None:
    """The denoiser's state-dict name for one of nnU-Net's ``PlainConvUNet`` names; None for entries that repeat
    another one (``all_modules``, ``decoder.encoder``) or have no counterpart (the coarsest segmentation head)."""
    if _REPEATS.search(nnunet_key):
        return None
    if match := _ENCODER.match(nnunet_key):
        stage, block, layer, name = match.groups()
        return f"encoder.{stage}.blocks.{block}.{layer}.{name}"
    if match := _DECODER.match(nnunet_key):
        stage, block, layer, name = match.groups()
        return f"decoder.{stage}.stage.blocks.{block}.{layer}.{name}"
    if match := _UPSAMPLE.match(nnunet_key):
        return f"decoder.{match.group(1)}.upsample.{match.group(2)}"
    if match := _HEAD.match(nnunet_key):
        level = n_stages - 2 - int(match.group(1))  # seg_layers run from the coarsest decoder stage to the finest
        if level == 0:
            return f"head.{match.group(2)}"
        if level in auxiliary_levels:
            return f"auxiliary_heads.{auxiliary_levels.index(level)}.{match.group(2)}"
        return None
    return nnunet_key  # not a PlainConvUNet name: reported as the first layer the denoiser lacks


@torch.no_grad()
def denoiser_state_from_plain_unet(denoiser: TimeConditionedUNet, weights: Mapping[str, Tensor],
                                   image_channels: int, source: str = "the checkpoint") -> dict[str, Tensor]:
    """The denoiser's complete state dict with nnU-Net's ``PlainConvUNet`` ``weights`` mapped in (module docstring).

    ``image_channels``: the image's input channels, the first ones of the denoiser's input; the rest (noisy mask,
    self-conditioning) start at zero. Raises ``IncompatibleWeights`` naming the first layer that does not match:
    a layer of the checkpoint the denoiser lacks (a residual-encoder or deeper U-Net), a shape that differs (other
    features, kernels, classes or input channels), a denoiser layer the checkpoint lacks, or residual stages.
    """
    if any(stage.shortcut is not None for stage in denoiser.encoder):
        raise IncompatibleWeights("the planned denoiser has residual stages, nnU-Net's plain U-Net has none; plan "
                                  "the segmentation denoiser with denoiser.residual_stages false (the planned default)")
    state = {key: value.clone() for key, value in denoiser.state_dict().items()}
    n_stages, levels = len(denoiser.encoder), denoiser.auxiliary_levels
    filled = set()
    for key, value in weights.items():
        target = denoiser_key(key, n_stages, levels)
        if target is None:
            continue
        if target not in state:
            raise IncompatibleWeights(f"{source}: layer {key} has no counterpart in the planned denoiser; its network "
                                      "is not the plan's plain U-Net (another plans identifier or architecture?)")
        value = value.detach().to(state[target].dtype)
        if target == "encoder.0.blocks.0.conv.weight":
            value = _first_conv(value, state[target], image_channels, key, source)
        elif tuple(value.shape) != tuple(state[target].shape):
            raise IncompatibleWeights(f"{source}: layer {key} has shape {tuple(value.shape)}, the planned denoiser's "
                                      f"{target} {tuple(state[target].shape)}; train from scratch or plan with the "
                                      "checkpoint's plans")
        state[target] = value
        filled.add(target)
    for key in state:
        if _ZERO_START.search(key):
            state[key].zero_()
        elif key not in filled and not _LEFT_AS_BUILT.search(key):
            raise IncompatibleWeights(f"{source}: has no weights for the planned denoiser's {key}; its network is "
                                      "not the plan's plain U-Net")
    return state


def _first_conv(value: Tensor, built: Tensor, image_channels: int, key: str, source: str) -> Tensor:
    """nnU-Net's first conv (F, C_image, *k) in the denoiser's (F, C_image + C_mask [+ C_cond], *k), zeros after."""
    expected = (built.shape[0], image_channels, *built.shape[2:])
    if tuple(value.shape) != expected:
        raise IncompatibleWeights(f"{source}: layer {key} has shape {tuple(value.shape)}, the planned denoiser needs "
                                  f"{expected} for its image channels; train from scratch or plan with the "
                                  "checkpoint's plans")
    widened = torch.zeros_like(built)
    widened[:, :image_channels] = value
    return widened
