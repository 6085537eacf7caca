"""Per-task settings for one configuration: what each task changes from the defaults in ``nnugen.config``, the
denoiser from the plan, and a memory plan for each task's own network. The choices and their sources:

- segmentation: ImgX-DiffSeg (Fu et al. 2023): 5 training timesteps, the mask (x0) predicted, Dice + CE on it,
  recycling; sampled with all 5 steps. nnU-Net's training length, optimiser and batch. The denoiser's stages are
  plain (no residual shortcuts), like nnU-Net's network: less time per training step (docs/benchmarks.md); its
  noisy-mask input and time modulation start at zero, so it starts as nnU-Net's segmentation U-Net (benchmarks.md:
  this is what brings its 2D Dice level with the baseline's).
- ddpm / ldm / anomaly: Ho et al. 2020 (1000 steps, eps), AdamW 1e-4 with an EMA (Nichol & Dhariwal 2021);
  sampled with DPM-Solver++ 20 steps (Lu et al. 2022); medimgen's plan-derived network. Anomaly maps: DDIM 20 steps
  per strength, 8 seeds averaged into each strength's counterfactual.
- autoencoder: medimgen's heuristics (perceptual 1, adversarial 0.25, at most 3 downsamplings, few filters).
- baseline: nnU-Net's own trainer; only its length comes from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from nnugen.config import (
    AnomalySettings,
    AutoencoderSettings,
    DenoiserSettings,
    DiffusionSettings,
    GenerationSettings,
    MemorySettings,
    SamplerSettings,
    TaskSettings,
    TrainingSettings,
)
from nnugen.folders.dataset_folders import InputError
from nnugen_planner.denoiser_plan import denoiser_from_arch, downsampled_patch
from nnugen_planner.memory import (
    NO_EXTRAS,
    MemoryBudgetError,
    TrainingExtras,
    UNetShape,
    combined,
    discriminator_extras,
    encoder_activation_elements,
    encoder_parameter_count,
    parameter_count,
    plan_memory,
)

GENERATIVE_TRAINING = TrainingSettings(optimizer="adamw", initial_lr=1e-4, weight_decay=0.0, ema_decay=0.999)


def _shape(denoiser: DenoiserSettings, in_channels: int, out_channels: int, patch: Sequence[int]) -> UNetShape:
    return UNetShape(in_channels, out_channels, tuple(patch), denoiser.features_per_stage, denoiser.kernel_sizes,
                     denoiser.strides, denoiser.n_conv_per_stage, denoiser.n_conv_per_stage_decoder)


def _memory(shape: UNetShape, batch: int, budget_gb: float, task: str, configuration: str,
            extras: TrainingExtras = NO_EXTRAS) -> MemorySettings:
    try:
        plan = plan_memory(shape, batch, budget_gb, extras=extras)
    except MemoryBudgetError as error:
        raise InputError(f"{configuration} / {task}: {error}") from None
    return MemorySettings(budget_gb=budget_gb, batch_size=plan.batch_size, grad_accumulation=plan.grad_accumulation,
                          amp=plan.amp, activation_checkpointing=plan.activation_checkpointing,
                          estimated_gb=plan.estimated_gb)


def _ema(shape: UNetShape) -> TrainingExtras:
    """The generators' EMA copy of the denoiser (fp32 weights, no gradient)."""
    return TrainingExtras(frozen_parameters=parameter_count(shape))


def autoencoder_strides(plan_strides: Sequence[Sequence[int]], levels: int = 2) -> tuple[tuple[int, ...], ...]:
    """The first ``levels`` downsamplings of the plan (anisotropic ones kept), after a full-resolution stage."""
    downsamplings = [tuple(s) for s in plan_strides[1:] if any(v > 1 for v in s)][:levels]
    return (tuple(1 for _ in plan_strides[0]), *downsamplings)


def plan_tasks(arch: dict[str, Any], patch: Sequence[int], batch: int, n_channels: int, n_classes: int,
               budget_gb: float, configuration: str) -> dict[str, TaskSettings]:
    """All tasks' settings for one configuration with ``n_channels`` image channels and ``n_classes`` output
    channels (segmentation heads, background included)."""
    tasks: dict[str, TaskSettings] = {}
    denoiser = denoiser_from_arch(arch, patch)

    plain = _shape(denoiser, n_channels, n_classes, patch)
    tasks["baseline"] = TaskSettings(memory=_memory(plain, batch, budget_gb, "baseline", configuration))

    seg_in = n_channels + n_classes
    tasks["segmentation"] = TaskSettings(
        memory=_memory(_shape(denoiser, seg_in, n_classes, patch), batch, budget_gb, "segmentation", configuration),
        denoiser=replace(denoiser, residual_stages=False, zero_init_conditioning=True),
        diffusion=DiffusionSettings(timesteps=5, model_output="x0", recycling=True, mse_weight=0.0),
        sampler=SamplerSettings(name="ddpm", steps=5, seeds=1),
    )

    generative = DiffusionSettings(timesteps=1000, model_output="eps", dice_weight=0.0, ce_weight=0.0)
    gen_sampler = SamplerSettings(name="dpm_solver++", steps=20)
    joint = n_channels + n_classes  # image + one-hot label generated together
    ddpm_shape = _shape(denoiser, joint, joint, patch)
    tasks["ddpm"] = TaskSettings(
        training=GENERATIVE_TRAINING,
        memory=_memory(ddpm_shape, batch, budget_gb, "ddpm", configuration, _ema(ddpm_shape)),
        denoiser=denoiser, diffusion=generative, sampler=gen_sampler, generation=GenerationSettings())

    ae = AutoencoderSettings(strides=autoencoder_strides(arch["strides"]))
    ae_denoiser = DenoiserSettings(features_per_stage=ae.features_per_stage,
                                   kernel_sizes=tuple(tuple(3 for _ in patch) for _ in ae.strides),
                                   strides=ae.strides, n_conv_per_stage=(2,) * len(ae.strides),
                                   n_conv_per_stage_decoder=(2,) * (len(ae.strides) - 1))
    # besides the autoencoder: its PatchGAN discriminator, and the frozen encoder of the dataset's nnU-Net that gives
    # the perceptual features (counted although "auto" finds none until the baseline is trained: it errs high)
    autoencoder_extras = combined(
        discriminator_extras(n_channels, patch, AutoencoderSettings.discriminator_layers(patch)),
        TrainingExtras(frozen_parameters=encoder_parameter_count(plain),
                       activation_elements=encoder_activation_elements(plain)))
    tasks["autoencoder"] = TaskSettings(
        training=replace(GENERATIVE_TRAINING, ema_decay=0.0),
        memory=_memory(_shape(ae_denoiser, n_channels, n_channels, patch), batch, budget_gb, "autoencoder",
                       configuration, autoencoder_extras),
        autoencoder=ae)

    levels = len(ae.strides) - 1
    latent_patch = downsampled_patch(patch, ae.strides)
    try:
        latent_denoiser = denoiser_from_arch(arch, latent_patch, drop_downsamplings=levels)
    except InputError:
        latent_denoiser = None
    if latent_denoiser is not None:
        ldm_shape = _shape(latent_denoiser, ae.latent_channels, ae.latent_channels, latent_patch)
        tasks["ldm"] = TaskSettings(
            training=GENERATIVE_TRAINING,
            memory=_memory(ldm_shape, batch, budget_gb, "ldm", configuration, _ema(ldm_shape)),
            denoiser=latent_denoiser, diffusion=generative, sampler=gen_sampler,
            generation=GenerationSettings(mode="image"))

    anomaly_shape = _shape(denoiser, n_channels, n_channels, patch)
    tasks["anomaly"] = TaskSettings(
        training=GENERATIVE_TRAINING,
        memory=_memory(anomaly_shape, batch, budget_gb, "anomaly", configuration, _ema(anomaly_shape)),
        # cosine: with the linear schedule strengths 0.5 and 0.75 leave almost the same signal (abar 0.08 vs 0.004)
        denoiser=denoiser, diffusion=replace(generative, schedule="cosine"),
        # latent mode (off by default) reuses the latent diffusion model's denoiser on the autoencoder's latents
        # 8 seeds: each strength's map is the residual of the seeds' mean counterfactual (anomaly.seed_average),
        # whose sampling noise in healthy tissue shrinks with the seeds (docs/benchmarks.md)
        sampler=SamplerSettings(name="ddim", steps=20, seeds=8),
        anomaly=AnomalySettings(latent_denoiser=latent_denoiser))
    return tasks
