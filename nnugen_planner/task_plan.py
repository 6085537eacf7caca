"""Per-task settings for one configuration: what each task changes from the defaults in ``nnugen.config``, the
denoiser from the plan, and a memory plan for each task's own network. The choices and their sources:

- segmentation: ImgX-DiffSeg (Fu et al. 2023): 5 training timesteps, the mask (x0) predicted, Dice + CE on it,
  recycling; sampled with all 5 steps. nnU-Net's training length, optimiser and batch. The denoiser's stages are
  plain (no residual shortcuts), like nnU-Net's network: less time per training step (docs/benchmarks.md); its
  noisy-mask input and time modulation start at zero, so it starts as nnU-Net's segmentation U-Net (benchmarks.md:
  this is what brings its 2D Dice level with the baseline's).
- ddpm / ldm / anomaly: Ho et al. 2020 (1000 steps, eps), AdamW 1e-4 with an EMA (Nichol & Dhariwal 2021);
  sampled with DPM-Solver++ 20 steps (Lu et al. 2022); medimgen's plan-derived network. Anomaly maps: strength 0.75,
  DDIM 3 steps, 8 seeds averaged into one counterfactual: the cheapest setting within 10 % of the best measured on
  every model of the anomaly frontier benchmark (docs/benchmarks.md, "The anomaly map's cost against its quality").
- autoencoder: medimgen's heuristics (perceptual 1, adversarial 0.25, at most 3 downsamplings, few filters).
- baseline: nnU-Net's own trainer; only its length comes from here.
- memory: nnU-Net's batch where it fits the GPU budget, else activation checkpointing, else a smaller batch with
  gradient accumulation; where batch 1 does not fit, the tasks that train partitioned (baseline, segmentation, ddpm)
  split each patch across up to ``MAX_BLOCKS`` processes (Hou et al. 2019; ``nnugen_train`` under torchrun).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
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
from nnugen.patch_blocks import aligned_partitions
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

GENERATIVE_TRAINING = TrainingSettings(optimizer="adamw", initial_lr=1e-4, weight_decay=0.0, ema_decay=0.999,
                                       augmentation="none")
"""A generator learns the distribution of the patches it is shown: without nnU-Net's augmentation (rotations on a
constant fill, noise, blur, gamma, upside-down mirroring), not the augmented one. On the 2D MNI152 benchmark MMD² to
real slices fell by 15-30 % at 1024 GPU iterations (docs/benchmarks.md, "Generation quality against compute")."""
ANOMALY_TRAINING = replace(GENERATIVE_TRAINING, augmentation="nnunet")
"""nnU-Net's augmentation, as the anomaly benchmarks were measured (augmentation was not compared for this task)."""
GENERATIVE_DIFFUSION = DiffusionSettings(timesteps=1000, model_output="v", loss_weighting="min_snr", dice_weight=0.0,
                                         ce_weight=0.0)
"""v-prediction with min-SNR-5 weighting (Salimans & Ho 2022; Hang et al. 2023) for the generators: at equal
iterations it learned faster than eps-prediction and as fast as rectified flow on the 2D MNI152 benchmark, and it
keeps every sampler (docs/benchmarks.md, "Generation quality against compute")."""
ANOMALY_STRENGTHS = (0.75,)
ANOMALY_STEPS = 3
"""The anomaly map's noise strength and DDIM steps, chosen by benchmarks/anomaly_frontier.py: of the settings measured
on three models (two training seeds on MNI152 slices, 2D phantoms; two noise draws each), the cheapest whose every
draw is within 10 % of the best pixel AUPRC of its model. Fewer steps scored higher than more (3 against 20), and 0.75
alone higher than 0.25 / 0.5 / 0.75 averaged."""
ANOMALY_DIFFUSION = DiffusionSettings(timesteps=1000, schedule="cosine", model_output="eps", dice_weight=0.0,
                                      ce_weight=0.0)
"""eps-prediction, as the anomaly benchmarks were measured (the objective comparison did not include the anomaly task);
cosine: with the linear schedule strengths 0.5 and 0.75 leave almost the same signal (abar 0.08 vs 0.004)."""
PLANNED_SPACING = "log-snr"
"""Sampler steps uniform in log-SNR: at the planned step counts the sampled spread is within a few per cent of the
exact ODE's, where a grid uniform in t under-disperses by up to half (docs/benchmarks.md, "Sampler step spacing")."""
GENERATIVE_SAMPLER = SamplerSettings(name="dpm_solver++", steps=20, spacing=PLANNED_SPACING)


MAX_BLOCKS = 8
"""The most processes a planned partition splits one patch across: the GPUs of one node."""


def _shape(denoiser: DenoiserSettings, in_channels: int, out_channels: int, patch: Sequence[int]) -> UNetShape:
    return UNetShape(in_channels, out_channels, tuple(patch), denoiser.features_per_stage, denoiser.kernel_sizes,
                     denoiser.strides, denoiser.n_conv_per_stage, denoiser.n_conv_per_stage_decoder)


class TaskDoesNotFit(InputError):
    """A task's training does not fit the GPU budget, however its batch is cut."""


@dataclass(frozen=True)
class _Budget:
    """What the memory plans of one configuration's tasks share: nnU-Net's batch, the GPU budget in GB, and the
    configuration's name for error messages."""

    batch: int
    budget_gb: float
    configuration: str

    def memory(self, shape: UNetShape, task: str, extras: TrainingExtras = NO_EXTRAS,
               partitionable: bool = False) -> MemorySettings:
        """The memory plan of ``task``'s network ``shape``, split across up to ``MAX_BLOCKS`` processes where batch 1
        does not fit and the task trains partitioned; InputError naming the configuration and task."""
        partitions = aligned_partitions(shape.patch_size, shape.strides, MAX_BLOCKS) if partitionable else ()
        try:
            plan = plan_memory(shape, self.batch, self.budget_gb, extras=extras, partitions=partitions)
        except MemoryBudgetError as error:
            raise TaskDoesNotFit(f"{self.configuration} / {task}: {error}") from None
        return MemorySettings(budget_gb=self.budget_gb, batch_size=plan.batch_size,
                              grad_accumulation=plan.grad_accumulation, amp=plan.amp,
                              activation_checkpointing=plan.activation_checkpointing, estimated_gb=plan.estimated_gb,
                              partition=plan.partition)


def _ema(shape: UNetShape) -> TrainingExtras:
    """The generators' EMA copy of the denoiser (fp32 weights, no gradient)."""
    return TrainingExtras(frozen_parameters=parameter_count(shape))


def autoencoder_strides(plan_strides: Sequence[Sequence[int]], levels: int = 2) -> tuple[tuple[int, ...], ...]:
    """The first ``levels`` downsamplings of the plan (anisotropic ones kept), after a full-resolution stage."""
    downsamplings = [tuple(s) for s in plan_strides[1:] if any(v > 1 for v in s)][:levels]
    return (tuple(1 for _ in plan_strides[0]), *downsamplings)


def plan_tasks(arch: dict[str, Any], patch: Sequence[int], batch: int, n_channels: int, n_classes: int,
               budget_gb: float, configuration: str) -> tuple[dict[str, TaskSettings], dict[str, str]]:
    """All tasks' settings for one configuration with ``n_channels`` image channels and ``n_classes`` output
    channels (segmentation heads, background included), and the tasks left out because they do not fit the budget,
    each with the reason. InputError when no task fits."""
    budget = _Budget(batch, budget_gb, configuration)
    denoiser = denoiser_from_arch(arch, patch)
    plain = _shape(denoiser, n_channels, n_classes, patch)
    ae = AutoencoderSettings(strides=autoencoder_strides(arch["strides"]))
    latent_patch = downsampled_patch(patch, ae.strides)
    latent_denoiser = _latent_denoiser(arch, latent_patch, levels=len(ae.strides) - 1)
    planners = {
        "baseline": lambda: TaskSettings(memory=budget.memory(plain, "baseline", partitionable=True)),
        "segmentation": lambda: _segmentation(denoiser, n_channels, n_classes, patch, budget),
        # image + one-hot label generated together
        "ddpm": lambda: _ddpm(denoiser, n_channels + n_classes, patch, budget),
        "autoencoder": lambda: _autoencoder(ae, plain, n_channels, patch, budget),
        "ldm": None if latent_denoiser is None else
        lambda: _ldm(latent_denoiser, ae.latent_channels, latent_patch, budget),
        "anomaly": lambda: _anomaly(denoiser, latent_denoiser, n_channels, patch, budget),
    }
    tasks, unfit = {}, {}
    for name, plan in planners.items():
        if plan is None:
            continue
        try:
            tasks[name] = plan()
        except TaskDoesNotFit as error:
            unfit[name] = str(error)
    if "autoencoder" in unfit and tasks.pop("ldm", None) is not None:  # it trains on the autoencoder's latents
        unfit["ldm"] = f"it trains on the latents of the autoencoder, which was not planned: {unfit['autoencoder']}"
    if not tasks:
        raise InputError(unfit["baseline"])
    return tasks, unfit


def _segmentation(denoiser: DenoiserSettings, n_channels: int, n_classes: int, patch: Sequence[int],
                  budget: _Budget) -> TaskSettings:
    """ImgX-DiffSeg: the denoiser sees the image and the noisy mask, and predicts the mask."""
    return TaskSettings(
        memory=budget.memory(_shape(denoiser, n_channels + n_classes, n_classes, patch), "segmentation",
                             partitionable=True),
        denoiser=replace(denoiser, residual_stages=False, zero_init_conditioning=True),
        diffusion=DiffusionSettings(timesteps=5, model_output="x0", recycling=True, mse_weight=0.0),
        # shared first step: an ensemble (nnugen_predict --ensemble-size) pays one first call, not one per member;
        # Dice, AUROC and AUPRC as without (docs/benchmarks.md, "A shared first step")
        sampler=SamplerSettings(name="ddpm", steps=5, seeds=1, spacing=PLANNED_SPACING, shared_first_step=True),
    )


def _ddpm(denoiser: DenoiserSettings, joint: int, patch: Sequence[int], budget: _Budget) -> TaskSettings:
    """The image and one-hot label generated together: ``joint`` channels in and out."""
    shape = _shape(denoiser, joint, joint, patch)
    return TaskSettings(
        training=GENERATIVE_TRAINING, memory=budget.memory(shape, "ddpm", _ema(shape), partitionable=True),
        denoiser=denoiser, diffusion=GENERATIVE_DIFFUSION, sampler=GENERATIVE_SAMPLER, generation=GenerationSettings())


def _autoencoder(ae: AutoencoderSettings, plain: UNetShape, n_channels: int, patch: Sequence[int],
                 budget: _Budget) -> TaskSettings:
    """The autoencoder, its memory counted with what trains beside it (``plain``: the nnU-Net network's shape)."""
    ae_denoiser = DenoiserSettings(features_per_stage=ae.features_per_stage,
                                   kernel_sizes=tuple(tuple(3 for _ in patch) for _ in ae.strides),
                                   strides=ae.strides, n_conv_per_stage=(2,) * len(ae.strides),
                                   n_conv_per_stage_decoder=(2,) * (len(ae.strides) - 1))
    # besides the autoencoder: its PatchGAN discriminator, and the frozen encoder of the dataset's nnU-Net that gives
    # the perceptual features (counted although "auto" finds none until the baseline is trained: it errs high)
    extras = combined(
        discriminator_extras(n_channels, patch, AutoencoderSettings.discriminator_layers(patch)),
        TrainingExtras(frozen_parameters=encoder_parameter_count(plain),
                       activation_elements=encoder_activation_elements(plain)))
    return TaskSettings(
        training=replace(GENERATIVE_TRAINING, ema_decay=0.0),
        memory=budget.memory(_shape(ae_denoiser, n_channels, n_channels, patch), "autoencoder", extras),
        autoencoder=ae)


def _latent_denoiser(arch: dict[str, Any], latent_patch: Sequence[int], levels: int) -> DenoiserSettings | None:
    """The denoiser of the autoencoder's latents (``levels`` downsamplings below the image): the plan's remaining
    stages; None when the plan has none left for ``latent_patch``."""
    try:
        return denoiser_from_arch(arch, latent_patch, drop_downsamplings=levels)
    except InputError:
        return None


def _ldm(latent_denoiser: DenoiserSettings, latent_channels: int, latent_patch: Sequence[int],
         budget: _Budget) -> TaskSettings:
    shape = _shape(latent_denoiser, latent_channels, latent_channels, latent_patch)
    return TaskSettings(
        training=GENERATIVE_TRAINING, memory=budget.memory(shape, "ldm", _ema(shape)),
        denoiser=latent_denoiser, diffusion=GENERATIVE_DIFFUSION, sampler=GENERATIVE_SAMPLER,
        generation=GenerationSettings(mode="image"))


def planned_erosion(patch: Sequence[int]) -> int:
    """``anomaly.erode_region``: the patch's shortest extent / 25 voxels, Behrendt et al.'s (2023, pDDPM) erosion of
    the brain mask (slice width // 25). 0 where an axis is short (a thin slab of anisotropic slices), whose outer
    slices an erosion along that axis would remove whole."""
    return min(patch) // 25


def planned_erosion_search(patch: Sequence[int]) -> int:
    """``anomaly.erode_search``: the widest erosion the final validation tries, the patch's shortest extent / 8 voxels
    and at most 8 (2 for a 20-slice patch, 8 from 64 voxels on). The validation Dice chooses within it; the
    fixed ``planned_erosion`` stays for the fpr rule and for folds without validation lesions."""
    return min(min(patch) // 8, 8)


def _anomaly(denoiser: DenoiserSettings, latent_denoiser: DenoiserSettings | None, n_channels: int,
             patch: Sequence[int], budget: _Budget) -> TaskSettings:
    shape = _shape(denoiser, n_channels, n_channels, patch)
    return TaskSettings(
        training=ANOMALY_TRAINING,
        memory=budget.memory(shape, "anomaly", _ema(shape)),
        denoiser=denoiser, diffusion=ANOMALY_DIFFUSION,
        # latent mode (off by default) reuses the latent diffusion model's denoiser on the autoencoder's latents
        # 8 seeds: each strength's map is the residual of the seeds' mean counterfactual (anomaly.seed_average),
        # whose sampling noise in healthy tissue shrinks with the seeds (docs/benchmarks.md)
        # one strength of 3 DDIM steps: 20x fewer evaluations than 3 strengths x 20 steps, and a better map on every
        # model measured (docs/benchmarks.md, "The anomaly map's cost against its quality")
        sampler=SamplerSettings(name="ddim", steps=ANOMALY_STEPS, seeds=8, spacing=PLANNED_SPACING),
        # the map's region eroded, the width chosen on validation: counterfactuals rebuild the body's edge worst
        # (docs/benchmarks.md)
        anomaly=AnomalySettings(latent_denoiser=latent_denoiser, strengths=ANOMALY_STRENGTHS,
                                erode_region=planned_erosion(patch), erode_search=planned_erosion_search(patch)))
