"""Starting a training run from a trained nnU-Net (nnU-Net's ``-pretrained_weights``), read weights-only.

nnU-Net's own ``load_pretrained_weights`` unpickles the whole file and copies entries by name, so it knows its own
network only. nnugen reads the checkpoint weights-only (checkpoint_files.py) and puts the weights where the task's
model wants them: the diffusion segmenter's denoiser through the one-to-one mapping of
``networks/plain_unet_weights.py``; nnU-Net's own network (the baseline task) by name, as nnU-Net does, with the
segmentation heads taken when their shapes match (same labels) and left as initialised otherwise.
"""

from __future__ import annotations

import torch
from torch import nn

from nnugen.folders.checkpoint_files import load_nnunet_checkpoint, without_compile_prefix
from nnugen.networks.plain_unet_weights import IncompatibleWeights, denoiser_key, denoiser_state_from_plain_unet

PRETRAINED_TASKS = ("seg", "baseline")
"""The tasks ``-pretrained_weights`` can start: their networks are nnU-Net's plain U-Net or extend it exactly."""


def nnunet_weights(filename: str) -> dict[str, torch.Tensor]:
    """The network weights of an nnU-Net checkpoint (``checkpoint_final.pth`` / ``_best`` / ``_latest``), without
    the compile and DDP prefixes; CheckpointError for a file that is not one."""
    weights, _ = without_compile_prefix(load_nnunet_checkpoint(filename, torch.device("cpu"))["network_weights"])
    return {key.removeprefix("module."): value for key, value in weights.items() if isinstance(value, torch.Tensor)}


def load_into_denoiser(denoiser: nn.Module, weights: dict[str, torch.Tensor], image_channels: int,
                       filename: str) -> int:
    """Map nnU-Net's plain U-Net into the segmentation denoiser; returns the number of tensors taken."""
    state = denoiser_state_from_plain_unet(denoiser, weights, image_channels, source=filename)
    denoiser.load_state_dict(state)
    return sum(denoiser_key(key, len(denoiser.encoder), denoiser.auxiliary_levels) is not None for key in weights)


def load_into_nnunet_network(network: nn.Module, weights: dict[str, torch.Tensor], filename: str) -> int:
    """nnU-Net's rule for its own network: every entry but the segmentation heads must be there with its shape;
    the heads are taken when their shapes match. Returns the number of tensors taken."""
    state = network.state_dict()
    for key, value in state.items():
        head = ".seg_layers." in key
        if key not in weights and not head:
            raise IncompatibleWeights(f"{filename}: has no weights for the network's {key}; it was trained with "
                                      "another architecture (plans identifier)")
        if key in weights and tuple(weights[key].shape) != tuple(value.shape) and not head:
            raise IncompatibleWeights(f"{filename}: layer {key} has shape {tuple(weights[key].shape)}, the planned "
                                      f"network's {tuple(value.shape)}; train from scratch or use the same plans")
    taken = {key: weights[key].to(value.dtype) for key, value in state.items()
             if key in weights and tuple(weights[key].shape) == tuple(value.shape)}
    network.load_state_dict({**state, **taken})
    return len(taken)
