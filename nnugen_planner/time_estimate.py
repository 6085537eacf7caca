"""The planned training time: seconds per training iteration from the planned network's multiply-accumulates (MACs)
and an assumed device throughput, times the iterations the plan asks for. Pure functions, no torch.

The cost model, small on purpose (docs/generation.md, "3D recipes for users with a GPU"):

1. MACs of one forward pass of one sample (``forward_macs``): each convolution costs its weights times its output
   voxels, k x C_in x C_out per output voxel for a kernel of k voxels, and C_in x C_out for a transposed convolution
   whose kernel is its stride; self-attention over N positions of C channels costs 4 N C^2 (the q, k, v and output
   projections) + 2 N^2 C (scores and weighted sum). Norms, activations, the time embedding and AdaGN's scale and
   shift are element-wise and not counted: what they cost is inside the effective throughput.
2. Forward passes per training step (``passes_per_step``): 3, the forward and a backward pass that costs about two
   (gradients of the activations and of the weights); one more with activation checkpointing (Chen et al. 2016:
   every stage runs its forward again), one more for recycling's no-grad pass (Fu et al. 2023), and half of one for
   self-conditioning, whose extra pass a coin with p = 1/2 decides (Chen et al. 2023).
3. Seconds per iteration = 2 FLOPs per MAC x (passes x MACs per pass) x batch x gradient accumulation / effective
   FLOP/s (``seconds_per_iteration``): linear in each; a run is epochs x iterations per epoch of them
   (``training_seconds``; validation and data loading not counted).

The effective throughput is the one number that ties the count to a clock. ``CPU_THROUGHPUT`` is calibrated on
training steps timed on this project's 2-core CPU (``benchmarks/time_estimate_calibration.py``; docs/generation.md,
"How the time is estimated"); ``GPU_THROUGHPUT`` is an assumption, not measured: no GPU was lent to the session that
wrote this. ``benchmarks/gpu_check.py`` logs seconds per iteration on a GPU; set the constant from its numbers once
one has run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from nnugen_planner.memory import DISCRIMINATOR_CHANNELS, DISCRIMINATOR_KERNEL, UNetShape

FLOPS_PER_MAC = 2
TRAINING_PASSES = 3.0       # forward + backward (activation and weight gradients, about two forwards)
CHECKPOINTING_PASSES = 1.0  # every checkpointed stage runs its forward again in the backward pass
RECYCLING_PASSES = 1.0      # the segmenter's no-grad prediction that recycling feeds back (Fu et al. 2023)
SELF_CONDITIONING_PASSES = 0.5  # an extra no-grad pass in half of the steps (Chen et al. 2023, p = 1/2)
DISCRIMINATOR_PASSES = 9.0  # its own loss on the real image and the reconstruction (3 each), the adversarial loss (3)


@dataclass(frozen=True)
class Throughput:
    """The effective FLOP/s a device reaches on a whole training step (not its peak): ``tflops`` x 1e12, with
    ``name`` as the printed line says it and ``basis``, where the number comes from."""

    name: str
    tflops: float
    basis: str

    def __post_init__(self) -> None:
        if not (isinstance(self.tflops, (int, float)) and math.isfinite(self.tflops) and self.tflops > 0):
            raise ValueError(f"throughput {self.name}: tflops must be a positive number, got {self.tflops!r}")


GPU_THROUGHPUT = Throughput(
    "a GPU", 25.0,
    "assumed, not measured here: an A100 / H100-class GPU with bf16 AMP, taken as about twice the 11-14 effective "
    "TFLOP/s this cost model gives for nnU-Net v1's published V100 epoch time (Task002_Heart 3d_fullres, fp16)")
CPU_THROUGHPUT = Throughput(
    "a 2-core CPU", 0.015,
    "calibrated: fp32 training steps of four planned denoisers timed twice on this project's shared 2-core CPU under "
    "load, 2026-12-04: medians 15.1 and 15.9 effective GFLOP/s, single cases 7.7-24.3")


def stage_sizes(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """Spatial size of every encoder stage's output: the patch divided by the strides so far (at least 1 voxel)."""
    size, sizes = tuple(int(s) for s in patch_size), []
    for stride in strides:
        size = tuple(max(1, s // st) for s, st in zip(size, stride))
        sizes.append(size)
    return sizes


@dataclass(frozen=True)
class Layer:
    """One convolution of the U-Net: its ``weights`` (without bias) and its ``macs`` per sample."""

    where: str
    weights: int
    macs: int


def conv_layers(shape: UNetShape) -> Iterator[Layer]:
    """The convolutions of the U-Net ``shape`` as nnugen's TimeConditionedUNet (and nnU-Net's PlainConvUNet) lay them
    out: encoder stages, then decoder stages from the bottleneck up (decoder stage i runs at resolution level
    stages - 2 - i with ``n_conv_per_stage_decoder[i]`` convs), then the 1x1 output head."""
    voxels = [math.prod(size) for size in stage_sizes(shape.patch_size, shape.strides)]
    previous = shape.in_channels
    for s, (features, kernel, n_conv) in enumerate(zip(shape.features_per_stage, shape.kernel_sizes,
                                                      shape.n_conv_per_stage)):
        k = math.prod(kernel)
        for c in range(n_conv):
            weights = k * (previous if c == 0 else features) * features
            yield Layer(f"encoder {s} conv {c}", weights, weights * voxels[s])
        previous = features
    n_stages = len(shape.features_per_stage)
    for i, level in enumerate(range(n_stages - 2, -1, -1)):
        f, below, k = shape.features_per_stage[level], shape.features_per_stage[level + 1], \
            math.prod(shape.kernel_sizes[level])
        # a transposed conv with kernel = stride: each output voxel sees one input voxel, C_in x C_out MACs
        upsampling = math.prod(shape.strides[level + 1]) * below * f
        yield Layer(f"decoder {i} upsampling", upsampling, below * f * voxels[level])
        for c in range(shape.n_conv_per_stage_decoder[i]):
            weights = k * (2 * f if c == 0 else f) * f  # the first conv sees the upsampled features and the skip
            yield Layer(f"decoder {i} conv {c}", weights, weights * voxels[level])
    head = shape.features_per_stage[0] * shape.out_channels
    yield Layer("head", head, head * voxels[0])


def shortcut_macs(shape: UNetShape) -> int:
    """MACs per sample of the residual stages' 1x1 shortcuts (a stage whose channels change: every decoder stage, and
    encoder stages that widen)."""
    voxels = [math.prod(size) for size in stage_sizes(shape.patch_size, shape.strides)]
    channels = (shape.in_channels, *shape.features_per_stage)
    encoder = sum(channels[s] * channels[s + 1] * voxels[s] for s in range(len(voxels))
                  if channels[s] != channels[s + 1])
    decoder = sum(2 * f * f * v for f, v in zip(shape.features_per_stage[:-1], voxels[:-1]))
    return encoder + decoder


def attention_macs(shape: UNetShape, attention_stages: Sequence[int]) -> int:
    """MACs per sample of self-attention at the encoder stages ``attention_stages`` and the decoder stages at the
    same resolution (not the bottleneck, which has no decoder stage): 4 N C^2 + 2 N^2 C each."""
    voxels = [math.prod(size) for size in stage_sizes(shape.patch_size, shape.strides)]
    total = 0
    for s in attention_stages:
        n, c = voxels[s], shape.features_per_stage[s]
        blocks = 1 if s == len(voxels) - 1 else 2
        total += blocks * (4 * n * c * c + 2 * n * n * c)
    return total


def forward_macs(shape: UNetShape, attention_stages: Sequence[int] = (), residual_stages: bool = False) -> int:
    """MACs of one forward pass of one sample through the U-Net ``shape``."""
    macs = sum(layer.macs for layer in conv_layers(shape)) + attention_macs(shape, attention_stages)
    return macs + (shortcut_macs(shape) if residual_stages else 0)


def encoder_macs(shape: UNetShape) -> int:
    """MACs per sample of the encoder alone (a frozen nnU-Net encoder used as a perceptual network)."""
    return sum(layer.macs for layer in conv_layers(shape) if layer.where.startswith("encoder"))


def discriminator_macs(in_channels: int, patch_size: Sequence[int], num_layers: int) -> int:
    """MACs per sample of one forward pass of the autoencoder's PatchGAN discriminator, laid out as
    ``memory.discriminator_extras`` counts it: a 4-wide conv halving every axis, ``num_layers`` convs doubling the
    channels (all but the last halving the axes again), a 4-wide conv to one logit per patch."""
    dims = len(patch_size)
    k = DISCRIMINATOR_KERNEL**dims
    voxels = max(1, math.prod(patch_size) // 2**dims)
    channels = DISCRIMINATOR_CHANNELS
    macs = k * in_channels * channels * voxels
    for layer in range(num_layers):
        if layer < num_layers - 1:
            voxels = max(1, voxels // 2**dims)
        macs += k * channels * 2 * channels * voxels
        channels *= 2
    return macs + k * channels * voxels


def passes_per_step(checkpointing: bool = False, recycling: bool = False, self_conditioning: bool = False) -> float:
    """Forward-pass equivalents of one training step (module docstring, point 2)."""
    return TRAINING_PASSES + CHECKPOINTING_PASSES * checkpointing + RECYCLING_PASSES * recycling + \
        SELF_CONDITIONING_PASSES * self_conditioning


def seconds_per_iteration(step_macs: float, batch_size: int, grad_accumulation: int, throughput: Throughput) -> float:
    """Seconds of one iteration, ``grad_accumulation`` micro-steps of ``batch_size`` samples, each sample costing
    ``step_macs`` MACs (one pass's MACs x ``passes_per_step``), at ``throughput``."""
    for name, value in (("batch_size", batch_size), ("grad_accumulation", grad_accumulation)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if step_macs < 0:
        raise ValueError(f"step_macs must be >= 0, got {step_macs}")
    return FLOPS_PER_MAC * step_macs * batch_size * grad_accumulation / (throughput.tflops * 1e12)


def training_seconds(seconds_per_iter: float, epochs: int, iterations_per_epoch: int) -> float:
    """Seconds of a run of ``epochs`` x ``iterations_per_epoch`` iterations (validation and data loading aside)."""
    if epochs < 1 or iterations_per_epoch < 1:
        raise ValueError(f"epochs and iterations_per_epoch must be at least 1, got {epochs} and {iterations_per_epoch}")
    return seconds_per_iter * epochs * iterations_per_epoch


def readable_duration(seconds: float) -> str:
    """``about 62 h``, ``about 40 min``, ``about 3.5 days``: two significant figures in the largest fitting unit."""
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= 2 * size:
            return f"about {_two_figures(seconds / size)} {unit}"
    return f"about {_two_figures(seconds)} s"


def _two_figures(value: float) -> str:
    return f"{value:.2g}" if value < 100 else f"{value:.0f}"
