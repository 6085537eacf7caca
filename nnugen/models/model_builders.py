"""The model of each task, built from the plans' settings alone: the one call nnU-Net's predictor needs.

nnU-Net's predictor never creates a trainer; it calls ``build_network_architecture`` on the trainer class named in
the checkpoint. Every nnugen trainer answers that call with ``build_model`` (nnugen_trainer.py), and ``nnugen_sample``
builds its generators with the same function, so training, ``nnUNetv2_predict`` and nnugen's own inference build
one and the same network from a model folder's plans.json. Keyed by the settings section of the task table
(nnugen/tasks.py); the baseline has no builder here (nnU-Net's own network).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from torch import nn

from nnugen.config import GenerationSettings, NnugenSection, TaskSettings
from nnugen.models.anomaly_segmenter import AnomalySegmenter
from nnugen.models.denoiser_from_settings import denoiser_network
from nnugen.models.diffusion_segmenter import DiffusionSegmenter
from nnugen.models.image_generator import ImageGenerator
from nnugen.networks.autoencoder import Autoencoder, latent_patch
from nnugen.networks.zero_init import zero_input_channels, zero_time_modulation

ANATOMY_CLASSES = 2
"""The anatomy adapter's condition: the one-hot of the anatomy mask (outside, inside)."""


@dataclass(frozen=True)
class ModelSpec:
    """What a builder reads: the task's settings (a variant's changes applied), the configuration's whole nnugen
    section (the intensity map, the autoencoder a latent model works on) and nnU-Net's channel counts and patch."""

    settings: TaskSettings
    section: NnugenSection
    input_channels: int
    output_channels: int
    patch_size: tuple[int, ...]


def autoencoder_arguments(settings: TaskSettings, in_channels: int) -> dict:
    """``Autoencoder``'s keyword arguments for a task's autoencoder settings (also what ``autoencoder.json`` stores)."""
    ae = settings.autoencoder
    return {"in_channels": in_channels, "features_per_stage": list(ae.features_per_stage),
            "strides": [list(s) for s in ae.strides], "latent_channels": ae.latent_channels, "kind": ae.kind,
            "codebook_size": ae.codebook_size}


def diffusion_segmenter(spec: ModelSpec) -> DiffusionSegmenter:
    """Fu et al. 2023: the denoiser sees the image, the noisy mask and (self-conditioning) its previous estimate."""
    settings, classes = spec.settings, spec.output_channels
    diffusion = settings.diffusion
    extra = classes if diffusion.self_conditioning else 0
    network = denoiser_network(settings, spec.input_channels + classes + extra, classes,
                               deep_supervision=diffusion.deep_supervision)
    if settings.denoiser.zero_init_conditioning:
        zero_input_channels(network, spec.input_channels)
        zero_time_modulation(network)
    return DiffusionSegmenter(network, classes, diffusion, settings.sampler, amp=settings.memory.amp)


def image_generator(spec: ModelSpec) -> ImageGenerator:
    return ImageGenerator.from_settings(spec.settings, spec.input_channels, spec.output_channels, spec.patch_size)


def autoencoder(spec: ModelSpec) -> Autoencoder:
    return Autoencoder(**autoencoder_arguments(spec.settings, spec.input_channels),
                       activation_checkpointing=spec.settings.memory.activation_checkpointing)


def latent_denoiser(spec: ModelSpec) -> ImageGenerator:
    """The latent diffusion model: an image-only generator of the autoencoder's latents (its latent patch)."""
    settings, ae = spec.settings, spec.section.task("autoencoder").autoencoder
    channels = ae.latent_channels
    return ImageGenerator(denoiser_network(settings, channels, channels), channels, 0,
                          latent_patch(spec.patch_size, ae.strides), settings.diffusion, settings.sampler,
                          settings.generation, settings.training.ema_decay)


def anomaly_segmenter(spec: ModelSpec) -> AnomalySegmenter:
    """A generator of healthy images (or of the latents of the configuration's autoencoder) inside the anomaly model;
    an anatomy-mask input channel is never modelled."""
    settings = spec.settings
    channels = spec.input_channels - (1 if settings.anomaly.condition_channel else 0)
    patch, ae_model = spec.patch_size, None
    if settings.anomaly.space == "latent":
        ae_settings = spec.section.task("autoencoder")
        ae_model = Autoencoder(**autoencoder_arguments(ae_settings, spec.input_channels))
        channels = ae_model.latent_channels
        patch = latent_patch(patch, ae_settings.autoencoder.strides)
        settings = replace(settings, denoiser=settings.anomaly.latent_denoiser)
    settings = replace(settings, generation=settings.generation or GenerationSettings(mode="image"))
    classes = ANATOMY_CLASSES if settings.generation.mode == "label_adapter" else spec.output_channels
    generator = ImageGenerator.from_settings(settings, channels, classes, patch)
    return AnomalySegmenter(generator, settings.anomaly, spec.section.intensity, spec.output_channels,
                            autoencoder=ae_model, amp=settings.memory.amp)


MODEL_BUILDERS: dict[str, Callable[[ModelSpec], nn.Module]] = {
    "segmentation": diffusion_segmenter,
    "ddpm": image_generator,
    "autoencoder": autoencoder,
    "ldm": latent_denoiser,
    "anomaly": anomaly_segmenter,
}


def build_model(section: str, spec: ModelSpec) -> nn.Module:
    """The model of the task whose settings section is ``section``; ValueError for a section without one."""
    if section not in MODEL_BUILDERS:
        raise ValueError(f"the {section} task has no nnugen model (its network is nnU-Net's own)")
    return MODEL_BUILDERS[section](spec)
