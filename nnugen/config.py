"""Typed, frozen settings of the ``nnugen`` section that ``nnugen_plan`` writes into every configuration of
``nnugenPlans.json``. The defaults live here and nowhere else; the planner only fills in what it derives from the
nnU-Net plan (the denoiser, the memory plan, the intensity map). Bad values raise ``ValueError`` naming the field
and what to write instead. Pure Python: the planner and the CLIs' ``--help`` import this without torch.

Layout of the section (one per configuration)::

    "nnugen": {
        "version": 1,
        "intensity": {...},                       # IntensitySettings
        "tasks": {"segmentation": {...}, "ddpm": {...}, "autoencoder": {...}, "ldm": {...},
                  "anomaly": {...}, "baseline": {...}}   # TaskSettings each
    }
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nnugen.typed_section import MalformedFileError, Section, check_choice, check_range, fail

SECTION_VERSION = 1
TASK_SECTIONS = ("segmentation", "ddpm", "autoencoder", "ldm", "anomaly", "baseline")
"""The settings sections under ``nnugen.tasks``; which command trains which section: nnugen/tasks.py."""
SCHEDULES = ("linear", "cosine", "scaled_linear")
MODEL_OUTPUTS = ("x0", "eps", "v")
PROCESSES = ("ddpm", "rflow")
"""The forward process: variance-preserving diffusion (Ho et al. 2020) or rectified flow (Liu et al. 2023, through
MONAI's RFlowScheduler as MAISI v2 uses it: nnugen/diffusion/rectified_flow.py)."""
RFLOW_TASKS = ("ddpm", "ldm")  # the tasks whose models train and sample rectified flow (not segmentation, anomaly)
LOSS_WEIGHTINGS = ("uniform", "min_snr")
"""Per-sample weights of the denoising MSE: none, or min-SNR-gamma (Hang et al. 2023; diffusion/loss_weighting.py)."""
SAMPLERS = ("ddpm", "ddim", "dpm_solver++")
SPACINGS = ("uniform", "trailing", "log-snr")
"""Where a sampler's steps lie among the training timesteps (nnugen/diffusion/timesteps.py::sampling_timesteps)."""
AMP_DTYPES = ("bf16", "fp16", "fp32")
NORMS = ("instance", "group", "batch")
GENERATION_MODES = ("image", "joint", "label_conditioned", "label_adapter")
CONDITIONED_MODES = ("label_conditioned", "label_adapter")  # modes that generate images for given label maps
_DENOISING = ("denoiser", "diffusion", "sampler")
TASK_NEEDS = {"segmentation": _DENOISING, "ddpm": (*_DENOISING, "generation"), "autoencoder": ("autoencoder",),
              "ldm": (*_DENOISING, "generation"), "anomaly": (*_DENOISING, "anomaly"), "baseline": ()}
"""The settings sections each task's trainer and predictor read (the planner writes them all)."""
CONFIGURATION_ALIASES = {"3d": "3d_fullres"}  # nnugen's CLIs accept 3d for nnU-Net's 3d_fullres


def configuration_name(name: str) -> str:
    """nnU-Net's name of a configuration a user typed: ``3d`` -> ``3d_fullres``, any other name unchanged."""
    return CONFIGURATION_ALIASES.get(name, name)


@dataclass(frozen=True)
class DenoiserSettings(Section):
    """Time-conditioned U-Net, derived by the planner from the plan's ``arch_kwargs`` (anisotropy kept)."""

    features_per_stage: tuple[int, ...] = (32, 64, 128, 256)
    kernel_sizes: tuple[tuple[int, ...], ...] = ((3, 3, 3),) * 4
    strides: tuple[tuple[int, ...], ...] = ((1, 1, 1),) + ((2, 2, 2),) * 3
    n_conv_per_stage: tuple[int, ...] = (2, 2, 2, 2)
    n_conv_per_stage_decoder: tuple[int, ...] = (2, 2, 2)
    norm: str = "instance"
    time_embed_dim: int = 128
    attention_stages: tuple[int, ...] = ()
    attention_heads: int = 1
    dropout: float = 0.0
    residual_stages: bool = True
    """A shortcut around every stage (the planner turns it off for segmentation, whose U-Net is nnU-Net's plain one)."""
    zero_init_conditioning: bool = False
    """Segmentation: the first conv's weights on the noisy mask and every time scale-shift start at zero, so the
    untrained denoiser is the plain segmentation U-Net (``nnugen.networks.zero_init``)."""

    def __post_init__(self) -> None:
        n = len(self.features_per_stage)
        if n < 1:
            fail("denoiser.features_per_stage", "needs at least one stage")
        for name in ("kernel_sizes", "strides", "n_conv_per_stage"):
            if len(getattr(self, name)) != n:
                fail(f"denoiser.{name}", f"needs {n} entries (one per stage), got {len(getattr(self, name))}")
        if len(self.n_conv_per_stage_decoder) != n - 1:
            got = len(self.n_conv_per_stage_decoder)
            fail("denoiser.n_conv_per_stage_decoder", f"needs {n - 1} entries, got {got}")
        dims = {len(k) for k in self.kernel_sizes} | {len(s) for s in self.strides}
        if len(dims) != 1 or dims.pop() not in (2, 3):
            fail("denoiser.kernel_sizes", "kernel sizes and strides must all have 2 (2D) or 3 (3D) entries")
        check_choice("denoiser.norm", self.norm, NORMS)
        for s in self.attention_stages:
            if not 0 <= s < n:
                fail("denoiser.attention_stages", f"stage {s} does not exist (0 ... {n - 1})")
        check_range("denoiser.time_embed_dim", self.time_embed_dim, 1)
        check_range("denoiser.attention_heads", self.attention_heads, 1)
        check_range("denoiser.dropout", self.dropout, 0.0, 0.99)

    @property
    def dimension(self) -> int:
        return len(self.kernel_sizes[0])


@dataclass(frozen=True)
class DiffusionSettings(Section):
    """Forward process and training objective (Ho et al. 2020; x0 / Dice / recycling from Fu et al. 2023)."""

    timesteps: int = 1000
    schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    model_output: str = "eps"
    recycling: bool = False
    self_conditioning: bool = False
    deep_supervision: bool = False
    """Dice + CE also on coarser outputs of the denoiser's decoder, weighted as nnU-Net's deep supervision."""
    dice_weight: float = 1.0
    ce_weight: float = 1.0
    mse_weight: float = 1.0
    process: str = "ddpm"
    """``rflow``: x_t = (1 - t/T) x0 + (t/T) eps and the network predicts the velocity x0 - eps (MONAI's
    RFlowScheduler, Euler steps at sampling; ``model_output``, ``schedule`` and ``sampler.name`` are not read)."""
    loss_weighting: str = "uniform"
    """``min_snr``: each sample's MSE weighted by min(SNR, gamma) in x0 space (Hang et al. 2023); ``ddpm`` only."""
    min_snr_gamma: float = 5.0

    def __post_init__(self) -> None:
        check_range("diffusion.timesteps", self.timesteps, 1, 10000)
        check_choice("diffusion.process", self.process, PROCESSES)
        check_choice("diffusion.loss_weighting", self.loss_weighting, LOSS_WEIGHTINGS)
        check_range("diffusion.min_snr_gamma", self.min_snr_gamma, 1e-6)
        if self.process == "rflow" and self.loss_weighting != "uniform":
            fail("diffusion.loss_weighting", "min-SNR weighting is defined for process ddpm; set it to uniform "
                 "with process rflow")
        if self.process == "rflow" and (self.recycling or self.self_conditioning or self.deep_supervision):
            fail("diffusion.process", "rflow trains the generative tasks only; turn off recycling, "
                 "self_conditioning and deep_supervision or set process ddpm")
        check_choice("diffusion.schedule", self.schedule, SCHEDULES)
        check_choice("diffusion.model_output", self.model_output, MODEL_OUTPUTS)
        check_range("diffusion.beta_start", self.beta_start, 0.0, 1.0)
        check_range("diffusion.beta_end", self.beta_end, 0.0, 1.0)
        if not self.beta_start < self.beta_end:
            fail("diffusion.beta_start", "must be smaller than diffusion.beta_end")
        for name in ("dice_weight", "ce_weight", "mse_weight"):
            check_range(f"diffusion.{name}", getattr(self, name), 0.0)
        if self.deep_supervision and (self.model_output != "x0" or self.dice_weight + self.ce_weight == 0):
            fail("diffusion.deep_supervision", "needs model_output x0 and a Dice or CE weight above 0")


@dataclass(frozen=True)
class SamplerSettings(Section):
    """Inference defaults read by the predictor from the model folder's plans; ``nnugen_predict`` overrides them."""

    name: str = "ddim"
    steps: int = 50
    seeds: int = 1
    eta: float = 0.0
    mirroring: bool = False
    spacing: str = "uniform"
    """Where the steps lie among the training timesteps: uniform in t, trailing, or uniform in log-SNR. The planner
    plans log-SNR for every task (chosen by benchmarks/step_spacing.py: docs/benchmarks.md, "Sampler step spacing");
    uniform, the default, is how every plans file written before the setting existed samples, so such a model folder
    samples as it did."""
    shared_first_step: bool = False
    """Diffusion segmentation's ensembles: the members start from one noise (member 0's) and share the first network
    call, then part with the fresh noise the sampler draws at every step, so S members cost 1 + S (steps - 1) passes
    instead of S steps. Only where the sampler draws that noise (ddpm, ddim with eta above 0: ``shares_first_step``);
    ddim at eta 0 and dpm_solver++ would make the members identical and ignore it. The first step sees the noise at
    the last training timestep, where a mask keeps sqrt(alpha-bar) of its signal (0.006 for the planned 5-step linear
    schedule): what a member's first estimate could learn from its own start noise is that little. The generators
    and the anomaly task do not read it."""

    @property
    def shares_first_step(self) -> bool:
        """Whether the members share their start and first call: ``shared_first_step`` with a sampler that draws
        fresh noise at every step."""
        return self.shared_first_step and (self.name == "ddpm" or (self.name == "ddim" and self.eta > 0))

    def __post_init__(self) -> None:
        check_choice("sampler.name", self.name, SAMPLERS)
        check_choice("sampler.spacing", self.spacing, SPACINGS)
        check_range("sampler.steps", self.steps, 1)
        check_range("sampler.seeds", self.seeds, 1)
        check_range("sampler.eta", self.eta, 0.0, 1.0)


@dataclass(frozen=True)
class TrainingSettings(Section):
    """Length and optimisation of a run; nnU-Net's own defaults (1000 x 250 iterations, SGD 1e-2) for segmentation."""

    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    optimizer: str = "sgd"
    initial_lr: float = 1e-2
    weight_decay: float = 3e-5
    ema_decay: float = 0.0
    val_sampling_steps: int = 5
    save_every: int = 1
    max_nonfinite_steps: int = 5
    preview_every: int = 10
    keep_epochs: tuple[int, ...] = ()
    """Epoch counts (1-based) after which a copy ``checkpoint_epoch_NNNN.pth`` is kept, e.g. log-spaced snapshots to
    sample from with ``nnugen_sample -chk`` and follow quality against training time; none by default."""
    augmentation: str = "nnunet"
    """nnU-Net's training augmentation (``nnunet``), mirroring only (``mirror``) or none (``none``); the planner
    plans ``none`` for the generative tasks, which would otherwise learn the augmented images
    (nnugen/trainers/training_augmentation.py)."""

    def __post_init__(self) -> None:
        for name in ("epochs", "iterations_per_epoch", "val_iterations_per_epoch", "val_sampling_steps", "save_every",
                     "max_nonfinite_steps", "preview_every"):
            check_range(f"training.{name}", getattr(self, name), 1)
        for epoch in self.keep_epochs:
            check_range("training.keep_epochs", epoch, 1)
        check_choice("training.optimizer", self.optimizer, ("sgd", "adamw"))
        check_choice("training.augmentation", self.augmentation, ("nnunet", "mirror", "none"))
        check_range("training.initial_lr", self.initial_lr, 1e-9, 10.0)
        check_range("training.weight_decay", self.weight_decay, 0.0)
        check_range("training.ema_decay", self.ema_decay, 0.0, 0.99999)


@dataclass(frozen=True)
class MemorySettings(Section):
    """The memory plan: chosen by the planner from an estimate against ``budget_gb`` (see nnugen_planner/memory.py)."""

    budget_gb: float = 8.0
    batch_size: int = 2
    grad_accumulation: int = 1
    amp: str = "bf16"
    activation_checkpointing: bool = False
    estimated_gb: float = 0.0
    partition: tuple[int, ...] = ()
    """Pieces per spatial axis of each training patch, one block per process of a torchrun job (the default of
    ``nnugen_train --partition``); planned where batch 1 does not fit ``budget_gb`` whole; () for none."""

    def __post_init__(self) -> None:
        check_range("memory.budget_gb", self.budget_gb, 0.1)
        check_range("memory.batch_size", self.batch_size, 1)
        check_range("memory.grad_accumulation", self.grad_accumulation, 1)
        check_choice("memory.amp", self.amp, AMP_DTYPES)
        check_range("memory.estimated_gb", self.estimated_gb, 0.0)
        if any(not isinstance(p, int) or p < 1 for p in self.partition):
            fail("memory.partition", f"{list(self.partition)} must be positive piece counts, one per spatial axis of "
                 "the patch (e.g. [1, 1, 2]), or [] for none")

    @property
    def planned_partition(self) -> tuple[int, ...] | None:
        """``partition`` when it cuts the patch into more than one block, else None."""
        return self.partition if math.prod(self.partition) > 1 else None


@dataclass(frozen=True)
class AutoencoderSettings(Section):
    """KL or VQ autoencoder (medimgen; Esser et al. 2021 VQ-GAN; Rombach et al. 2022 LDM); at most 3 downsamplings."""

    kind: str = "kl"
    features_per_stage: tuple[int, ...] = (32, 64, 64)
    strides: tuple[tuple[int, ...], ...] = ((1, 1, 1), (2, 2, 2), (2, 2, 2))
    latent_channels: int = 4
    codebook_size: int = 512
    l1_weight: float = 1.0
    perceptual_weight: float = 1.0
    adversarial_weight: float = 0.25
    kl_weight: float = 1e-6
    codebook_weight: float = 1.0
    adversarial_warmup_iterations: int = 1000
    perceptual_network: str = ""
    decode_chunks: int = 1

    def __post_init__(self) -> None:
        check_choice("autoencoder.kind", self.kind, ("kl", "vq"))
        if len(self.strides) != len(self.features_per_stage):
            fail("autoencoder.strides", f"needs {len(self.features_per_stage)} entries (one per stage)")
        downsamplings = sum(any(s > 1 for s in stride) for stride in self.strides)
        if downsamplings > 3:
            fail("autoencoder.strides", f"{downsamplings} downsamplings; use at most 3 (details are lost beyond)")
        for name in ("latent_channels", "codebook_size", "decode_chunks"):
            check_range(f"autoencoder.{name}", getattr(self, name), 1)
        for name in ("l1_weight", "perceptual_weight", "adversarial_weight", "kl_weight", "codebook_weight"):
            check_range(f"autoencoder.{name}", getattr(self, name), 0.0)
        check_range("autoencoder.adversarial_warmup_iterations", self.adversarial_warmup_iterations, 0)

    @staticmethod
    def discriminator_layers(patch_size: Sequence[int]) -> int:
        """The PatchGAN's downsampling layers for a patch: it needs 3 * 2**layers voxels per axis, so thin patches
        (e.g. 20 slices) get fewer than the usual 3 (read by the trainer and by the memory plan)."""
        return max(1, min(3, int(math.log2(max(1, min(patch_size) // 3)))))


@dataclass(frozen=True)
class AnomalySettings(Section):
    """Counterfactual anomaly segmentation (pDDPM / AnoDDPM style partial noising; THOR-like post-processing).
    ``space``: ``image`` (pixel space) or ``latent`` (the diffusion model works on the latents of the trained
    autoencoder of the same configuration and fold, with ``latent_denoiser``; the map compares the decoded
    counterfactual with the autoencoded input). ``condition_channel``: the name (in dataset.json's ``channel_names``)
    of an input channel holding an anatomy mask (read as channel > 0.5); it is never modelled as an image, and with
    ``mask_to_anatomy`` the map is 0 outside it. Image space only."""

    space: str = "image"
    latent_denoiser: DenoiserSettings | None = None
    strengths: tuple[float, ...] = (0.25, 0.5, 0.75)
    noise: str = "gaussian"
    inversion: bool = False
    inversion_iterations: int = 0
    """With ``inversion``: fixed-point iterations per DDIM inversion step towards the exact inverse of the decoding
    step (Pan et al. 2023); 0 = plain DDIM inversion, N > 0 = up to N more denoiser calls per step. Converged, the
    counterfactual is the input itself (docs/anomaly.md): the map keeps only what did not converge."""
    inversion_tolerance: float = 1e-4
    """The max abs change of an iterate (in the model's [-1, 1], or latent units) that stops its iteration."""
    seed_average: str = "counterfactual"
    """With several seeds (``sampler.seeds``): the map at each strength is the residual of the seeds' mean
    counterfactual ("counterfactual"), or the mean of the seeds' residuals ("residual")."""
    median_filter: int = 3
    min_component_voxels: int = 10
    mask_to_body: bool = True
    threshold_rule: str = "best_dice"
    target_fpr: float = 0.01
    healthy_cases_file: str = ""
    condition_channel: str = ""
    mask_to_anatomy: bool = True
    erode_region: int = 0
    """Voxels by which the map's region (body and anatomy masks, as switched on) is eroded before it masks the map
    (face connectivity, not at tile borders): counterfactuals rebuild the body's edge worst, so residuals crowd there
    (Baur et al. 2021 and Behrendt et al. 2023 erode the brain mask for the same reason); 0 = off."""
    erode_search: int = 0
    """With the ``best_dice`` rule: the final validation also tries every erosion 0..N of the map's region and keeps
    the one whose best threshold reaches the highest validation Dice (the smaller on a tie), stored in the model with
    the threshold in place of ``erode_region``; 0 = off (``erode_region`` as set)."""
    max_batch: int = 8
    """The most samples per denoiser call when the counterfactuals of all strengths and seeds are denoised together
    (stacked on the batch axis, one sampler loop per group, filled strength by strength: 8 holds the planned 8 seeds
    of one strength); 1 = one counterfactual at a time. Bounds memory on large tiles; the map does not depend on it
    beyond float round-off."""

    def __post_init__(self) -> None:
        if self.condition_channel and self.space == "latent":
            fail("anomaly.condition_channel", "an anatomy condition channel works in image space only; set "
                 "anomaly.space=image or leave anomaly.condition_channel empty")
        if not self.strengths:
            fail("anomaly.strengths", "needs at least one strength in (0, 1]")
        for s in self.strengths:
            if not 0.0 < s <= 1.0:
                fail("anomaly.strengths", f"strength {s} is outside (0, 1]")
        check_choice("anomaly.space", self.space, ("image", "latent"))
        if self.space == "latent" and self.latent_denoiser is None:
            fail("anomaly.latent_denoiser", "latent space needs a latent denoiser; re-run nnugen_plan to plan one")
        check_choice("anomaly.noise", self.noise, ("gaussian", "simplex", "filtered"))
        check_choice("anomaly.seed_average", self.seed_average, ("counterfactual", "residual"))
        check_choice("anomaly.threshold_rule", self.threshold_rule, ("best_dice", "fpr"))
        check_range("anomaly.median_filter", self.median_filter, 0)
        check_range("anomaly.min_component_voxels", self.min_component_voxels, 0)
        check_range("anomaly.erode_region", self.erode_region, 0, 64)
        check_range("anomaly.erode_search", self.erode_search, 0, 64)
        check_range("anomaly.target_fpr", self.target_fpr, 0.0, 1.0)
        check_range("anomaly.max_batch", self.max_batch, 1)
        check_range("anomaly.inversion_iterations", self.inversion_iterations, 0, 1000)
        check_range("anomaly.inversion_tolerance", self.inversion_tolerance, 0.0)

    def condition_index(self, channel_names: dict[str, str], schemes: tuple[str, ...] = ()) -> int | None:
        """The input channel of ``condition_channel`` in dataset.json's ``channel_names`` ({"0": "T2", ...}), or None
        when none is set. ValueError for a name that is not there or not unique, a dataset with no other channel, or a
        channel that nnU-Net normalises (``schemes``: the configuration's ``normalization_schemes``), which would turn
        the 0 / 1 mask into z-scores."""
        if not self.condition_channel:
            return None
        names = [channel_names[k] for k in sorted(channel_names, key=int)]
        if names.count(self.condition_channel) != 1:
            fail("anomaly.condition_channel", f"{self.condition_channel!r} is not exactly one channel of dataset.json "
                 f"(channels: {', '.join(names)}); set it to the anatomy mask's channel name or leave it empty")
        if len(names) == 1:
            fail("anomaly.condition_channel", f"{self.condition_channel!r} is the dataset's only channel; the "
                 "anomaly model needs at least one image channel besides the anatomy mask")
        index = names.index(self.condition_channel)
        if index < len(schemes) and schemes[index] != "NoNormalization":
            fail("anomaly.condition_channel", f"nnU-Net normalises channel {self.condition_channel!r} with "
                 f"{schemes[index]} (it picks the normalisation from the channel name); name the mask's channel "
                 "noNorm in dataset.json and preprocess again")
        return index


@dataclass(frozen=True)
class GenerationSettings(Section):
    """What a generative model produces: the image alone, image + label jointly (the label one-hot as extra
    channels, generated together; medimgen), or the image for a given label map: the map as input channels
    (``label_conditioned``) or through a T2I-Adapter on a frozen, trained image-only DDPM (``label_adapter``, Mou et
    al. 2023). ``base_model``: that DDPM's model folder; empty = the same dataset's NnugenDDPMTrainer of the same
    configuration and fold. ``condition_dropout``: probability that a training sample's label map is replaced by the
    empty map, so the model also learns the unconditional case; ``guidance_scale`` w of classifier-free guidance at
    sampling (Ho & Salimans 2022): uncond + w (cond - uncond); 1 = no guidance."""

    mode: str = "joint"
    preview_steps: int = 20
    base_model: str = ""
    condition_dropout: float = 0.1
    guidance_scale: float = 1.0

    def __post_init__(self) -> None:
        check_choice("generation.mode", self.mode, GENERATION_MODES)
        check_range("generation.preview_steps", self.preview_steps, 1)
        check_range("generation.condition_dropout", self.condition_dropout, 0.0, 0.99)
        check_range("generation.guidance_scale", self.guidance_scale, 0.0, 100.0)


@dataclass(frozen=True)
class TaskSettings(Section):
    """Everything one task's trainer and predictor need; sections a task does not use are left out (None)."""

    training: TrainingSettings = field(default_factory=TrainingSettings)
    memory: MemorySettings = field(default_factory=MemorySettings)
    denoiser: DenoiserSettings | None = None
    diffusion: DiffusionSettings | None = None
    sampler: SamplerSettings | None = None
    autoencoder: AutoencoderSettings | None = None
    anomaly: AnomalySettings | None = None
    generation: GenerationSettings | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_dict().items() if v is not None}


@dataclass(frozen=True)
class ChannelIntensity(Section):
    """Linear map of one channel of the preprocessed data to [-1, 1] (``low`` -> -1, ``high`` -> 1), and the
    dataset-level statistics that undo nnU-Net's normalisation so samples come out in the original units."""

    scheme: str = "ZScoreNormalization"
    low: float = -3.0
    high: float = 3.0
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        if not self.low < self.high:
            fail("intensity.channels.low", f"low ({self.low}) must be below high ({self.high})")
        check_range("intensity.channels.std", self.std, 1e-12)


@dataclass(frozen=True)
class IntensitySettings(Section):
    channels: tuple[ChannelIntensity, ...] = ()


@dataclass(frozen=True)
class NnugenSection(Section):
    """The whole ``nnugen`` section of one configuration."""

    version: int = SECTION_VERSION
    intensity: IntensitySettings = field(default_factory=IntensitySettings)
    tasks: dict[str, TaskSettings] = field(default_factory=dict)
    unfit: dict[str, str] = field(default_factory=dict)
    """Tasks the planner left out because their training does not fit the GPU budget, each with the planner's
    one-line reason (what to change); training such a task is refused with it."""

    def __post_init__(self) -> None:
        if self.version != SECTION_VERSION:
            fail("nnugen.version", f"{self.version} is not supported (expected {SECTION_VERSION}); re-run nnugen_plan")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "nnugen") -> NnugenSection:
        if data is not None and not isinstance(data, dict):
            fail(where, f"expected a mapping (the section nnugen_plan writes), got {_json_kind(data)}; re-run "
                        "nnugen_plan")
        data = dict(data or {})
        tasks = data.pop("tasks", {})
        if not isinstance(tasks, dict):
            fail(f"{where}.tasks", "expected a mapping of task name -> settings")
        unknown = sorted(map(str, set(tasks) - set(TASK_SECTIONS)))
        if unknown:
            fail(f"{where}.tasks", f"unknown task(s) {', '.join(unknown)}; valid: {', '.join(TASK_SECTIONS)}")
        for name, settings in tasks.items():
            if not isinstance(settings, dict):
                fail(f"{where}.tasks.{name}", f"expected a mapping of settings sections, got {_json_kind(settings)}")
        parsed = {name: TaskSettings.from_dict(tasks[name], f"{where}.tasks.{name}")
                  for name in TASK_SECTIONS if name in tasks}
        for name, settings in parsed.items():
            if settings.diffusion is not None and settings.diffusion.process != "ddpm" and name not in RFLOW_TASKS:
                fail(f"{where}.tasks.{name}.diffusion.process", f"task {name} supports process ddpm only "
                     f"(rflow: {', '.join(RFLOW_TASKS)}); set it to ddpm")
            weighted = settings.diffusion is not None and settings.diffusion.loss_weighting != "uniform"
            if name == "segmentation" and weighted:
                fail(f"{where}.tasks.{name}.diffusion.loss_weighting", "the segmentation loss (Dice + CE) is not "
                     "SNR-weighted; set it to uniform")
            missing = [part for part in TASK_NEEDS[name] if getattr(settings, part) is None]
            if missing:
                fail(f"{where}.tasks.{name}", f"missing {', '.join(missing)}, which task {name} needs; write it back "
                                              "or re-run nnugen_plan --overwrite")
        unfit = data.pop("unfit", {})
        if not isinstance(unfit, dict) or not all(isinstance(v, str) for v in unfit.values()):
            fail(f"{where}.unfit", "expected a mapping of task name -> why it was not planned; re-run nnugen_plan")
        unknown = sorted(map(str, set(unfit) - set(TASK_SECTIONS)))
        if unknown:
            fail(f"{where}.unfit", f"unknown task(s) {', '.join(unknown)}; valid: {', '.join(TASK_SECTIONS)}")
        base = super().from_dict(data, where)
        return dataclasses.replace(base, tasks=parsed, unfit=dict(unfit))

    def to_dict(self) -> dict[str, Any]:
        written = {"version": self.version, "intensity": self.intensity.to_dict(),
                   "tasks": {name: self.tasks[name].to_dict() for name in TASK_SECTIONS if name in self.tasks}}
        if self.unfit:
            written["unfit"] = dict(self.unfit)
        return written

    def task(self, name: str) -> TaskSettings:
        if name not in self.tasks and name in self.unfit:
            raise ValueError(f"task '{name}' was not planned: {self.unfit[name]}")
        if name not in self.tasks:
            raise ValueError(f"the nnugen section has no settings for task '{name}'; re-run nnugen_plan")
        return self.tasks[name]


def _json_kind(value: Any) -> str:
    """How a wrong value reads in JSON: null, a list, a string, ..."""
    names = {type(None): "null", list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def section_of(configuration: dict[str, Any], configuration_name: str = "") -> NnugenSection:
    """Parse and validate the ``nnugen`` section of one (inheritance-resolved) configuration dict of the plans.

    Parsed once per process: the trainer, the network builder nnU-Net calls and the run's checks all ask for the same
    section, and get the same frozen object back as long as its content is the same."""
    if not isinstance(configuration, dict) or "nnugen" not in configuration:
        raise ValueError(f"configuration '{configuration_name}' has no nnugen section: these are not nnugenPlans; "
                         "run nnugen_plan -d ID and train with -p nnugenPlans")
    where = configuration_name or "configuration"
    if not isinstance(configuration["nnugen"], dict):  # null, a list, ...: the parsed default would hide it
        raise MalformedFileError(f"{where}.nnugen: expected a mapping (the section nnugen_plan writes), got "
                                 f"{_json_kind(configuration['nnugen'])}; re-run nnugen_plan")
    # the cache key keeps NaN / Infinity (json.dumps writes them as NaN / Infinity): the parse refuses them
    return _parsed_section(json.dumps(configuration["nnugen"], sort_keys=True), where)


@functools.lru_cache(maxsize=64)
def _parsed_section(text: str, where: str) -> NnugenSection:
    try:
        return NnugenSection.from_dict(json.loads(text), f"{where}.nnugen")
    except ValueError as error:  # what the plans file holds, not a flag: a malformed file (exit code 2)
        raise MalformedFileError(str(error)) from None
