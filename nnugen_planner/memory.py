"""The memory plan: batch size, gradient accumulation, AMP dtype and activation checkpointing, chosen from an
estimate of a training step's peak GPU memory against a budget (default 8 GB, as nnU-Net plans for).

The estimate counts what autograd keeps for the backward pass of the time-conditioned U-Net (conv, norm, scale-shift
and activation outputs per conv block, skips and concatenations in the decoder), plus weights, gradients and two
optimiser moments, plus a fixed allowance for the CUDA context and allocator slack. It is deliberately simple and
errs high; the measured peak is logged by the trainer so users can see how close it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

TENSORS_PER_CONV_BLOCK = 5      # conv out, norm out, scale-shift out, activation out, residual sum
BYTES_PER_PARAM = 16            # fp32 weight + grad + two optimiser moments
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
class MemoryPlan:
    batch_size: int
    grad_accumulation: int
    amp: str
    activation_checkpointing: bool
    estimated_gb: float


def _stage_voxels(shape: UNetShape) -> list[int]:
    size = list(shape.patch_size)
    voxels = []
    for stride in shape.strides:
        size = [max(1, s // st) for s, st in zip(size, stride)]
        voxels.append(math.prod(size))
    return voxels


def parameter_count(shape: UNetShape) -> int:
    count, previous = 0, shape.in_channels
    for features, kernel, n_conv in zip(shape.features_per_stage, shape.kernel_sizes, shape.n_conv_per_stage):
        k = math.prod(kernel)
        count += k * previous * features + (n_conv - 1) * k * features * features
        previous = features
    for s in range(len(shape.features_per_stage) - 2, -1, -1):
        f, f_below, k = shape.features_per_stage[s], shape.features_per_stage[s + 1], math.prod(shape.kernel_sizes[s])
        count += math.prod(shape.strides[s + 1]) * f_below * f  # transposed conv
        count += k * 2 * f * f + (shape.n_conv_per_stage_decoder[s] - 1) * k * f * f
    return count + shape.features_per_stage[0] * shape.out_channels


def activation_elements(shape: UNetShape, checkpointing: bool) -> int:
    """Elements kept for backward per sample; with checkpointing only stage boundaries plus one stage's peak."""
    voxels = _stage_voxels(shape)
    per_stage = []
    for s, (features, n_conv) in enumerate(zip(shape.features_per_stage, shape.n_conv_per_stage)):
        per_stage.append(TENSORS_PER_CONV_BLOCK * n_conv * features * voxels[s])
    for s in range(len(shape.features_per_stage) - 1):
        f = shape.features_per_stage[s]
        per_stage.append((3 + TENSORS_PER_CONV_BLOCK * shape.n_conv_per_stage_decoder[s]) * f * voxels[s])
    inputs = (shape.in_channels + 2 * shape.out_channels) * voxels[0]
    if not checkpointing:
        return inputs + sum(per_stage)
    boundaries = sum(2 * f * v for f, v in zip(shape.features_per_stage, voxels))
    return inputs + boundaries + max(per_stage)


def estimate_gb(shape: UNetShape, batch_size: int, amp: str, checkpointing: bool) -> float:
    bytes_per_element = BYTES_FP32 if amp == "fp32" else BYTES_AMP
    activations = batch_size * activation_elements(shape, checkpointing) * bytes_per_element
    return (activations + BYTES_PER_PARAM * parameter_count(shape)) / 1024**3 + CONTEXT_GB


def plan_memory(shape: UNetShape, batch_size: int, budget_gb: float, amp: str = "bf16") -> MemoryPlan:
    """Keep nnU-Net's batch size if it fits; else turn on checkpointing; else lower the batch and accumulate
    gradients so the effective batch stays ``batch_size``. Raises MemoryBudgetError if batch 1 does not fit."""
    # only batches that divide nnU-Net's, so batch x accumulation is exactly nnU-Net's effective batch
    divisors = [batch for batch in range(batch_size, 0, -1) if batch_size % batch == 0]
    for checkpointing in (False, True):
        for batch in divisors:
            gb = estimate_gb(shape, batch, amp, checkpointing)
            if gb <= budget_gb:
                return MemoryPlan(batch, batch_size // batch, amp, checkpointing, round(gb, 2))
            if not checkpointing:
                break  # first try checkpointing at the full batch before shrinking it
    need = estimate_gb(shape, 1, amp, True)
    raise MemoryBudgetError(
        f"the {len(shape.patch_size)}D patch {'x'.join(map(str, shape.patch_size))} needs about {need:.2f} GB at "
        f"batch 1 with activation checkpointing, more than the budget of {budget_gb:g} GB: raise --gpu-memory-gb, or "
        "re-plan nnU-Net with a smaller patch (nnUNetv2_plan_experiment -gpu_memory_target) and run nnugen_plan again")
