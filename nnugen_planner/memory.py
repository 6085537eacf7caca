"""The memory plan: batch size, gradient accumulation, AMP dtype, activation checkpointing and, where batch 1 does
not fit, a spatial partition of each patch across processes, chosen from an estimate of a training step's peak GPU
memory against a budget (default 8 GB, as nnU-Net plans for).

The estimate counts what autograd keeps for the backward pass of the time-conditioned U-Net (conv, norm, scale-shift
and activation outputs per conv block, skips and concatenations in the decoder), plus weights, gradients and two
optimiser moments, plus what a task keeps besides its U-Net (``TrainingExtras``: the EMA copy of a generator, the
autoencoder's PatchGAN discriminator and frozen perceptual network), plus a fixed allowance for the CUDA context and
allocator slack. It is deliberately simple and errs high. The trainers log the measured peak next to it after the
first epoch on a GPU (``peak GPU memory``); its constants have not been checked on a GPU yet (docs/scaling.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

TENSORS_PER_CONV_BLOCK = 5      # conv out, norm out, scale-shift out, activation out, residual sum
BYTES_PER_PARAM = 16            # fp32 weight + grad + two optimiser moments
BYTES_PER_FROZEN_PARAM = 4      # fp32 weight only (an EMA copy, a frozen network)
DISCRIMINATOR_CHANNELS = 32     # nnugen/networks/patch_discriminator.py's default first-layer width
DISCRIMINATOR_KERNEL = 4        # PatchGAN's 4-wide convolutions
TENSORS_PER_DISCRIMINATOR_LAYER = 3  # conv, norm, LeakyReLU outputs
TENSORS_PER_FROZEN_CONV = 2     # nnU-Net's conv and norm outputs (its LeakyReLU works in place)
CONTEXT_GB = 1.0                # CUDA context, cuDNN workspace, allocator fragmentation
BYTES_AMP = 3.0                 # half-precision activations, but norms and softmax stay fp32 under autocast
BYTES_FP32 = 4.0


class MemoryBudgetError(ValueError):
    """The budget cannot hold even batch 1 with activation checkpointing at the planned patch."""


@dataclass(frozen=True)
class UNetShape:
    """What the estimate needs to know about a U-Net: channels in/out, patch, features, strides, convs per stage."""

    in_channels: int
    out_channels: int
    patch_size: Sequence[int]
    features_per_stage: Sequence[int]
    kernel_sizes: Sequence[Sequence[int]]
    strides: Sequence[Sequence[int]]
    n_conv_per_stage: Sequence[int]
    n_conv_per_stage_decoder: Sequence[int]


@dataclass(frozen=True)
class TrainingExtras:
    """What a training step holds besides its U-Net: ``frozen_parameters`` (fp32 weights only: an EMA copy, a frozen
    perceptual network), ``trained_parameters`` (with gradient and optimiser moments: a discriminator) and
    ``activation_elements`` kept for backward per sample (those networks' outputs)."""

    frozen_parameters: int = 0
    trained_parameters: int = 0
    activation_elements: int = 0


NO_EXTRAS = TrainingExtras()


@dataclass(frozen=True)
class MemoryPlan:
    batch_size: int
    grad_accumulation: int
    amp: str
    activation_checkpointing: bool
    estimated_gb: float
    partition: tuple[int, ...] = ()
    """Pieces per spatial axis of each patch, one block per process of a torchrun job; () for none."""


def _stage_voxels(shape: UNetShape, pieces: Sequence[int] | None = None) -> list[int]:
    """Voxels per stage of one sample, or of one block of it when the patch is cut into ``pieces`` per axis: the
    block grown by the halo its convolutions receive from both neighbours along every cut axis."""
    pieces = pieces or (1,) * len(shape.patch_size)
    size = list(shape.patch_size)
    voxels = []
    for stride, kernel in zip(shape.strides, shape.kernel_sizes):
        size = [max(1, s // st) for s, st in zip(size, stride)]
        block = [s // p + (2 * (k // 2) if p > 1 else 0) for s, p, k in zip(size, pieces, kernel)]
        voxels.append(math.prod(block))
    return voxels


def _decoder_convs(shape: UNetShape, level: int) -> int:
    """Convs of the decoder stage at resolution ``level``: nnU-Net's ``n_conv_per_stage_decoder`` counts from the
    bottleneck up, so its entry ``i`` runs at level ``stages - 2 - i``."""
    return shape.n_conv_per_stage_decoder[len(shape.features_per_stage) - 2 - level]


def parameter_count(shape: UNetShape) -> int:
    count, previous = 0, shape.in_channels
    for features, kernel, n_conv in zip(shape.features_per_stage, shape.kernel_sizes, shape.n_conv_per_stage):
        k = math.prod(kernel)
        count += k * previous * features + (n_conv - 1) * k * features * features
        previous = features
    for s in range(len(shape.features_per_stage) - 2, -1, -1):
        f, f_below, k = shape.features_per_stage[s], shape.features_per_stage[s + 1], math.prod(shape.kernel_sizes[s])
        count += math.prod(shape.strides[s + 1]) * f_below * f  # transposed conv
        count += k * 2 * f * f + (_decoder_convs(shape, s) - 1) * k * f * f
    return count + shape.features_per_stage[0] * shape.out_channels


def activation_elements(shape: UNetShape, checkpointing: bool, pieces: Sequence[int] | None = None) -> int:
    """Elements kept for backward per sample (per block of it with ``pieces``); with checkpointing only stage
    boundaries plus one stage's peak."""
    voxels = _stage_voxels(shape, pieces)
    per_stage = []
    for s, (features, n_conv) in enumerate(zip(shape.features_per_stage, shape.n_conv_per_stage)):
        per_stage.append(TENSORS_PER_CONV_BLOCK * n_conv * features * voxels[s])
    for s in range(len(shape.features_per_stage) - 1):
        f = shape.features_per_stage[s]
        per_stage.append((3 + TENSORS_PER_CONV_BLOCK * _decoder_convs(shape, s)) * f * voxels[s])
    inputs = (shape.in_channels + 2 * shape.out_channels) * voxels[0]
    if not checkpointing:
        return inputs + sum(per_stage)
    boundaries = sum(2 * f * v for f, v in zip(shape.features_per_stage, voxels))
    return inputs + boundaries + max(per_stage)


def encoder_activation_elements(shape: UNetShape) -> int:
    """Elements per sample that a frozen nnU-Net encoder (the perceptual network) keeps so that the gradient reaches
    its input: each conv's and norm's output."""
    voxels = _stage_voxels(shape)
    return sum(TENSORS_PER_FROZEN_CONV * n * f * v for f, n, v in zip(shape.features_per_stage, shape.n_conv_per_stage,
                                                                        voxels))


def encoder_parameter_count(shape: UNetShape) -> int:
    count, previous = 0, shape.in_channels
    for features, kernel, n_conv in zip(shape.features_per_stage, shape.kernel_sizes, shape.n_conv_per_stage):
        k = math.prod(kernel)
        count += k * previous * features + (n_conv - 1) * k * features * features
        previous = features
    return count


def discriminator_extras(in_channels: int, patch_size: Sequence[int], num_layers: int) -> TrainingExtras:
    """MONAI's PatchDiscriminator as nnugen builds it: a 4-wide conv halving every axis, ``num_layers`` convs doubling
    the channels (all but the last halving the axes again), and a 4-wide conv to one logit. Its activations count
    three passes: real and reconstruction for its own loss, the reconstruction again for the adversarial loss."""
    dims = len(patch_size)
    k = DISCRIMINATOR_KERNEL**dims
    voxels = max(1, math.prod(patch_size) // 2**dims)
    channels = DISCRIMINATOR_CHANNELS
    parameters, elements = k * in_channels * channels, TENSORS_PER_DISCRIMINATOR_LAYER * channels * voxels
    for layer in range(num_layers):
        if layer < num_layers - 1:
            voxels = max(1, voxels // 2**dims)
        parameters += k * channels * 2 * channels
        channels *= 2
        elements += TENSORS_PER_DISCRIMINATOR_LAYER * channels * voxels
    parameters += k * channels  # the last conv, to one logit per patch
    return TrainingExtras(trained_parameters=parameters, activation_elements=3 * elements)


def combined(*extras: TrainingExtras) -> TrainingExtras:
    return TrainingExtras(sum(e.frozen_parameters for e in extras), sum(e.trained_parameters for e in extras),
                          sum(e.activation_elements for e in extras))


def estimate_gb(shape: UNetShape, batch_size: int, amp: str, checkpointing: bool,
                extras: TrainingExtras = NO_EXTRAS, pieces: Sequence[int] | None = None) -> float:
    """Peak GB of one device; with ``pieces`` of a process that trains one block of every patch (the weights, their
    optimiser state and the extras are each process's whole copy)."""
    bytes_per_element = BYTES_FP32 if amp == "fp32" else BYTES_AMP
    elements = activation_elements(shape, checkpointing, pieces) + extras.activation_elements
    weights = BYTES_PER_PARAM * (parameter_count(shape) + extras.trained_parameters) + \
        BYTES_PER_FROZEN_PARAM * extras.frozen_parameters
    return (batch_size * elements * bytes_per_element + weights) / 1024**3 + CONTEXT_GB


def plan_memory(shape: UNetShape, batch_size: int, budget_gb: float, amp: str = "bf16",
                extras: TrainingExtras = NO_EXTRAS, partitions: Sequence[Sequence[int]] = ()) -> MemoryPlan:
    """Keep nnU-Net's batch size if it fits; else turn on checkpointing; else lower the batch and accumulate
    gradients so the effective batch stays ``batch_size``; else split each patch into the first of ``partitions``
    (pieces per axis, fewest blocks first) whose blocks fit, one per process. Raises MemoryBudgetError if none fits."""
    for pieces in (None, *partitions):
        plan = _fitting_plan(shape, batch_size, budget_gb, amp, extras, pieces)
        if plan is not None:
            return plan
    need = estimate_gb(shape, 1, amp, True, extras)
    tried = f", nor split into up to {max(math.prod(p) for p in partitions)} blocks" if partitions else ""
    raise MemoryBudgetError(
        f"the {len(shape.patch_size)}D patch {'x'.join(map(str, shape.patch_size))} needs about {need:.2f} GB at "
        f"batch 1 with activation checkpointing{tried}, more than the budget of {budget_gb:g} GB: raise "
        "--gpu-memory-gb, or re-plan nnU-Net with a smaller patch (nnUNetv2_plan_experiment -gpu_memory_target) and "
        "run nnugen_plan again")


def _fitting_plan(shape: UNetShape, batch_size: int, budget_gb: float, amp: str, extras: TrainingExtras,
                  pieces: Sequence[int] | None) -> MemoryPlan | None:
    # only batches that divide nnU-Net's, so batch x accumulation is exactly nnU-Net's effective batch
    divisors = [batch for batch in range(batch_size, 0, -1) if batch_size % batch == 0]
    for checkpointing in (False, True):
        for batch in divisors:
            gb = estimate_gb(shape, batch, amp, checkpointing, extras, pieces)
            if gb <= budget_gb:
                return MemoryPlan(batch, batch_size // batch, amp, checkpointing, round(gb, 2), tuple(pieces or ()))
            if not checkpointing:
                break  # first try checkpointing at the full batch before shrinking it
    return None
