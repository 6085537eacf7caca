"""What ``nnugen_plan`` prints after writing nnugenPlans.json: per configuration and task, the estimated time of the
training the plan asks for (epochs x iterations per epoch x seconds per iteration; the cost model of
``time_estimate.py``), read back from the written plans, so ``--set`` and hand edits count. No torch.

Which network a task trains, with which channels, is what its model builder builds (nnugen/models/model_builders.py):

- baseline: nnU-Net's own U-Net (the plan's ``arch_kwargs``), image channels in, one output per segmentation head;
- segmentation: the denoiser, image + noisy mask (+ the previous estimate with self-conditioning) in, mask out;
- ddpm / anomaly: the denoiser on the generated channels (image, + labels in ``joint`` mode), the label map
  concatenated in ``label_conditioned`` mode; the anomaly task's latent space uses its latent denoiser;
- ldm: the latent denoiser on the autoencoder's latent channels and latent patch;
- autoencoder: counted as the U-Net of its features and strides, as its memory plan counts it, plus the frozen
  perceptual encoder (nnU-Net's encoder; forward on both images and backward to the input: 3 passes) and the PatchGAN
  discriminator (``DISCRIMINATOR_PASSES``), also while the adversarial loss is still warming up: it errs high.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nnugen.config import AutoencoderSettings, NnugenSection, TaskSettings
from nnugen_planner.denoiser_plan import arch_kwargs_of, denoiser_from_arch, downsampled_patch
from nnugen_planner.memory import UNetShape
from nnugen_planner.time_estimate import (
    DISCRIMINATOR_PASSES,
    GPU_THROUGHPUT,
    TRAINING_PASSES,
    Throughput,
    discriminator_macs,
    encoder_macs,
    forward_macs,
    passes_per_step,
    readable_duration,
    seconds_per_iteration,
    training_seconds,
)


@dataclass(frozen=True)
class TaskTime:
    """The estimate for one task of one configuration."""

    configuration: str
    task: str
    epochs: int
    iterations_per_epoch: int
    batch_size: int
    grad_accumulation: int
    seconds_per_iteration: float
    budget_gb: float
    throughput: Throughput = GPU_THROUGHPUT
    blocks: int = 1
    """Processes each patch is split across (``memory.partition``); the time is theirs together."""

    @property
    def total_seconds(self) -> float:
        return training_seconds(self.seconds_per_iteration, self.epochs, self.iterations_per_epoch)

    def line(self) -> str:
        accumulated = f" x {self.grad_accumulation} accumulated" if self.grad_accumulation > 1 else ""
        device = f"{self.throughput.name} of {self.budget_gb:g} GB"
        if self.blocks > 1:
            device = f"{self.blocks} x {device} (each patch split across them, halo exchange not counted)"
        return (f"nnugen_plan: {self.configuration} {self.task}: {self.epochs} epochs x {self.iterations_per_epoch} "
                f"iterations (batch {self.batch_size}{accumulated}), about {_seconds(self.seconds_per_iteration)} per "
                f"iteration on {device} -> {readable_duration(self.total_seconds)}")


def _seconds(value: float) -> str:
    return f"{value:.2g} s" if value < 100 else f"{value:.0f} s"


def _shape(settings_denoiser: Any, in_channels: int, out_channels: int, patch: Sequence[int]) -> UNetShape:
    d = settings_denoiser
    return UNetShape(in_channels, out_channels, tuple(patch), d.features_per_stage, d.kernel_sizes, d.strides,
                     d.n_conv_per_stage, d.n_conv_per_stage_decoder)


def _generator_channels(settings: TaskSettings, image_channels: int, n_classes: int) -> tuple[int, int]:
    """(in, out) channels of a generator's denoiser (ImageGenerator.from_settings)."""
    mode = settings.generation.mode if settings.generation is not None else "image"
    generated = image_channels + (n_classes if mode == "joint" else 0)
    concatenated = n_classes if mode == "label_conditioned" else 0
    return generated + concatenated, generated


@dataclass(frozen=True)
class TaskNetwork:
    """What one training step of a task runs: its U-Net ``shape`` (with attention and residual shortcuts as planned),
    ``passes`` forward-pass equivalents of it per sample, and ``extra_macs`` per sample beside it (the autoencoder's
    frozen perceptual encoder and discriminator)."""

    shape: UNetShape
    attention_stages: tuple[int, ...] = ()
    residual_stages: bool = False
    passes: float = TRAINING_PASSES
    extra_macs: float = 0.0

    def step_macs(self) -> float:
        """MACs per sample of one training step."""
        return self.passes * forward_macs(self.shape, self.attention_stages, self.residual_stages) + self.extra_macs


def task_network(task: str, section: NnugenSection, configuration: dict[str, Any], name: str, n_channels: int,
                 n_classes: int) -> TaskNetwork:
    """The network ``task`` of configuration ``name`` trains (module docstring), read from its settings."""
    settings = section.task(task)
    patch = tuple(int(p) for p in configuration["patch_size"])
    passes = passes_per_step(settings.memory.activation_checkpointing)
    if task in ("baseline", "autoencoder"):
        plain = _shape(denoiser_from_arch(arch_kwargs_of(configuration, name), patch), n_channels, n_classes, patch)
        if task == "baseline":
            return TaskNetwork(plain, passes=passes)
        ae = settings.autoencoder
        ae_shape = UNetShape(n_channels, n_channels, patch, ae.features_per_stage,
                             tuple(tuple(3 for _ in patch) for _ in ae.strides), ae.strides, (2,) * len(ae.strides),
                             (2,) * (len(ae.strides) - 1))
        discriminator = discriminator_macs(n_channels, patch, AutoencoderSettings.discriminator_layers(patch))
        extra = TRAINING_PASSES * encoder_macs(plain) + DISCRIMINATOR_PASSES * discriminator
        return TaskNetwork(ae_shape, passes=passes, extra_macs=extra)
    denoiser, diffusion = settings.denoiser, settings.diffusion
    if task == "segmentation":
        extra = n_classes if diffusion.self_conditioning else 0
        shape = _shape(denoiser, n_channels + n_classes + extra, n_classes, patch)
        passes = passes_per_step(settings.memory.activation_checkpointing,
                                 diffusion.recycling and diffusion.timesteps > 1, diffusion.self_conditioning)
    elif task == "ldm" or (task == "anomaly" and settings.anomaly.space == "latent"):
        ae = section.task("autoencoder").autoencoder
        if task == "anomaly":
            denoiser = settings.anomaly.latent_denoiser
        shape = _shape(denoiser, ae.latent_channels, ae.latent_channels, downsampled_patch(patch, ae.strides))
    else:
        image_channels = n_channels - (1 if task == "anomaly" and settings.anomaly.condition_channel else 0)
        shape = _shape(denoiser, *_generator_channels(settings, image_channels, n_classes), patch)
    return TaskNetwork(shape, tuple(denoiser.attention_stages), denoiser.residual_stages, passes)


def planned_times(plans: dict[str, Any], n_channels: int, n_classes: int, configurations: Sequence[str],
                  throughput: Throughput = GPU_THROUGHPUT) -> list[TaskTime]:
    """The estimate of every planned task of every configuration of ``configurations`` that has an nnugen section,
    for a dataset of ``n_channels`` image channels and ``n_classes`` segmentation heads."""
    times = []
    for name in configurations:
        configuration = plans["configurations"][name]
        if "nnugen" not in configuration:
            continue
        section = NnugenSection.from_dict(configuration["nnugen"], f"{name}.nnugen")
        for task, settings in section.tasks.items():
            macs = task_network(task, section, configuration, name, n_channels, n_classes).step_macs()
            memory, training = settings.memory, settings.training
            blocks = math.prod(memory.partition)
            seconds = seconds_per_iteration(macs, memory.batch_size, memory.grad_accumulation, throughput) / blocks
            times.append(TaskTime(name, task, training.epochs, training.iterations_per_epoch, memory.batch_size,
                                  memory.grad_accumulation, seconds, memory.budget_gb, throughput, blocks))
    return times


def unplanned_tasks(plans: dict[str, Any], configurations: Sequence[str]) -> list[str]:
    """One line per task the planner left out of a configuration because it does not fit the budget."""
    lines = []
    for name in configurations:
        section = plans["configurations"][name].get("nnugen")
        for task, reason in (section or {}).get("unfit", {}).items():
            lines.append(f"nnugen_plan: {name} {task}: not planned: {reason}")
    return lines


def assumption_line(throughput: Throughput = GPU_THROUGHPUT) -> str:
    """The line that says what the times above assume."""
    return (f"nnugen_plan: these times assume {throughput.tflops:g} effective TFLOP/s on {throughput.name}, an "
            "assumption not measured on a GPU; they leave out validation and data loading, and small networks run "
            "slower than this (per-step overhead): docs/generation.md, '3D recipes for users with a GPU'")
