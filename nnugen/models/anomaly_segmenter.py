"""``AnomalySegmenter``: counterfactual anomaly segmentation (pDDPM / cDDPM, Behrendt et al. 2023; AnoDDPM, Wyatt et
al. 2022; THOR, Bercea et al. 2024) as nnU-Net's trainer and predictor see it.

A diffusion model of healthy images (an ``ImageGenerator`` in image mode, held by composition: its EMA weights and
eps-MSE training loss are reused as they are) turns a partially noised scan back into a pseudo-healthy one; the
residual to the input is the anomaly map (nnugen.anomaly). The model also carries the threshold chosen on the fold's
validation cases (buffer ``threshold``, with ``threshold_chosen`` telling whether it has been chosen: a NaN sentinel
would be refused by the checkpoint writer, which never saves non-finite tensors).

- ``forward(x0, loss=True)``: healthy batch in [-1, 1] (B, C, *patch) -> the generator's training loss (a scalar).
- ``anomaly_map(image)``: image in nnU-Net's preprocessed intensities (B, C, *spatial) -> map (B, 1, *spatial):
  intensities mapped to [-1, 1] with the plans' intensity map, counterfactuals at every strength and seed, at each
  strength the residual of the seeds' mean counterfactual (``anomaly.seed_average``), their mean over strengths,
  then a median filter and the body mask (``postprocess``).
- ``forward(image)`` in eval mode: the logits (B, C_out, *spatial) nnU-Net's predictor wants, one tensor per tile:
  background 0, lesion ``logit_scale * (map - threshold)`` (further labels -30, never chosen), so the argmax is
  ``map > threshold`` and the softmax ``sigmoid(logit_scale * (map - threshold))``. Both are linear in the map, so
  nnU-Net's Gaussian-weighted tile average and its resampling of logits keep the argmax equal to thresholding the
  averaged, resampled map. Connected components smaller than ``min_component_voxels`` are removed per tile.

Every call draws its noise from a ``torch.Generator`` seeded with ``seed`` (member k of ``sampler.seeds`` uses
``seed + k``), so a given image always gets the same map. The counterfactuals of all strengths and seeds are denoised
``anomaly.max_batch`` samples at a time, stacked on the batch axis (seeded_counterfactuals); the map does not depend
on it beyond float round-off.

Anatomy mask (``anomaly.condition_channel``): one input channel holds an anatomy mask (read as channel > 0.5; its
index in the input, from dataset.json, is the buffer ``condition_index`` that the trainer sets and the checkpoint
keeps). The generator models the other channels only, and the map is computed on them; with ``mask_to_anatomy`` it is
0 outside the mask. With a generator in mode ``label_adapter`` (``NnugenAnomalyTrainer_anatomyAdapter``), every
counterfactual is denoised with the adapter's residuals from the mask's one-hot (Mou et al. 2023).

Latent mode (``anomaly.space: latent``): the generator models the scaled latents of a frozen autoencoder held inside
(``encode`` / ``decode``); the counterfactual is decoded and compared with the autoencoded input decode(encode(x)),
not with x, so the autoencoder's reconstruction error stays out of the map.

Inside ``packed_output()``, eval ``forward`` returns every output of ``nnugen_predict`` stacked on the channel axis, so
one pass of nnU-Net's sliding window averages all of them over tiles (and folds): the logits above, the map, its
variance across seeds and the mean counterfactual (``unpack`` splits them again).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import torch
from torch import Tensor, nn

from nnugen.anomaly import (
    anatomy_condition,
    body_mask,
    check_strength,
    ensemble_map,
    postprocess,
    residual_map,
    seed_averaged_residuals,
    split_anatomy,
)
from nnugen.anomaly.counterfactual import seeded_counterfactuals
from nnugen.config import AnomalySettings, IntensitySettings
from nnugen.diffusion.parameterisation import x0_denoiser
from nnugen.models.anomaly_outputs import AnomalyResult, PackedOutputs
from nnugen.models.image_generator import ImageGenerator, volume_denoiser
from nnugen.models.intensity_map import IntensityMap
from nnugen.models.precision import planned_autocast
from nnugen.networks.autoencoder import Autoencoder

LOGIT_SCALE = 100.0
"""Lesion logit per unit of anomaly score above the threshold; maps are residuals in [-1, 1] units (0 ... 2), so the
logits stay within nnU-Net's float16 accumulation while 0.01 above the threshold already means p = 0.73."""
OTHER_LABEL_LOGIT = -30.0
NO_CONDITION_INDEX = ("this anomaly model does not know which input channel holds the anatomy mask "
                      "(condition_index unset); train it with nnugen_train, which records it from dataset.json")
NO_THRESHOLD = ("this anomaly model has no threshold yet: run the final validation (nnugen_train ID FOLD CONFIG "
                "--task anomaly --val) to choose it on the fold's validation cases; it is stored in "
                "checkpoint_final.pth")


class AnomalySegmenter(nn.Module):
    def __init__(self, generator: ImageGenerator, anomaly: AnomalySettings, intensity: IntensitySettings,
                 num_classes: int = 2, logit_scale: float = LOGIT_SCALE, autoencoder: Autoencoder | None = None,
                 amp: str = "fp32"):
        super().__init__()
        self.amp = amp  # the planned precision of the counterfactuals, whatever autocast the caller opened
        mode = generator.generation.mode
        if mode not in ("image", "label_adapter"):
            raise ValueError(f"the anomaly model needs an image-only generator or an anatomy adapter, got mode "
                             f"{mode!r}")
        if mode == "label_adapter" and not anomaly.condition_channel:
            raise ValueError("the anatomy adapter is conditioned on an anatomy mask: set anomaly.condition_channel to "
                             "the name of the mask's channel in dataset.json (nnugen_plan --set "
                             "anomaly.anomaly.condition_channel=NAME)")
        if num_classes < 2:
            raise ValueError(f"anomaly segmentation needs a background and a lesion label, got {num_classes} classes")
        if (autoencoder is None) != (anomaly.space == "image"):
            raise ValueError(f"anomaly.space {anomaly.space!r} needs {'an' if autoencoder is None else 'no'} "
                             "autoencoder")
        self.generator = generator
        # latent mode: the trained autoencoder, frozen (its weights travel in the checkpoint, for the predictor)
        self.autoencoder = autoencoder.requires_grad_(False) if autoencoder is not None else None
        if autoencoder is not None:  # image-mode checkpoints keep their keys
            self.register_buffer("latent_scale", torch.zeros(()))
        if anomaly.condition_channel:  # which input channel is the mask: set by the trainer, kept in the checkpoint
            self.register_buffer("condition_index", torch.tensor(-1))
        self.anomaly = anomaly
        # the plans' map of every input channel (the predictor rebuilds it from the model folder's plans.json)
        self.input_intensity = intensity
        self.num_classes = num_classes
        self.logit_scale = logit_scale
        self.seed = 0
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("threshold_chosen", torch.zeros((), dtype=torch.bool))
        self._output = "logits"  # "map" (map_output) or "packed" (packed_output)

    def compiled_parts(self) -> list[nn.Module]:
        """What ``torch.compile`` may compile (compile_policy.py): the generator's networks and, in latent mode, the
        autoencoder's encoder and decoder; counterfactual loops, maps and post-processing stay eager."""
        autoencoder = self.autoencoder.compiled_parts() if self.autoencoder is not None else []
        return self.generator.compiled_parts() + autoencoder

    def set_threshold(self, threshold: float) -> None:
        """Store the threshold chosen on validation data (anomalous where map > threshold)."""
        if not torch.isfinite(torch.tensor(float(threshold))):
            raise ValueError(f"the threshold must be a finite number, got {threshold!r}")
        self.threshold.fill_(float(threshold))
        self.threshold_chosen.fill_(True)

    @contextmanager
    def _output_as(self, kind: str) -> Iterator[None]:
        self._output = kind
        try:
            yield
        finally:
            self._output = "logits"

    def map_output(self):
        """Inside: eval ``forward`` returns the raw map in channel 1 (threshold 0, scale 1) instead of thresholded
        logits, so nnU-Net's sliding window averages maps; used to choose the threshold."""
        return self._output_as("map")

    def packed_output(self):
        """Inside: eval ``forward`` returns logits, map, variance and counterfactual stacked (``packed_channels``
        channels); the threshold must be chosen."""
        return self._output_as("packed")

    def set_condition_index(self, index: int) -> None:
        """Record which input channel holds the anatomy mask (its index in dataset.json's ``channel_names``)."""
        if not self.anomaly.condition_channel:
            raise ValueError("this anomaly model has no anatomy condition channel (anomaly.condition_channel is empty)")
        if not 0 <= index < len(self.input_intensity.channels):
            raise ValueError(f"condition channel {index} is not one of the {len(self.input_intensity.channels)} input "
                             "channels of the plans' intensity map")
        self.condition_index.fill_(int(index))

    def anatomy_channel(self) -> int | None:
        """The input channel that holds the anatomy mask, or None without ``anomaly.condition_channel``."""
        if not self.anomaly.condition_channel:
            return None
        if int(self.condition_index) < 0:
            raise ValueError(NO_CONDITION_INDEX)
        return int(self.condition_index)

    def image_channel_indices(self) -> list[int]:
        """The input channels the model treats as images (all but the anatomy mask)."""
        anatomy = self.anatomy_channel()
        return [k for k in range(len(self.input_intensity.channels)) if k != anatomy]

    @property
    def intensity(self) -> IntensityMap:
        """The plans' intensity map of the image channels (the anatomy mask left out)."""
        channels = self.input_intensity.channels
        return IntensityMap(replace(self.input_intensity, channels=tuple(channels[k]
                                                                         for k in self.image_channel_indices())))

    @property
    def image_channels(self) -> int:
        return self.generator.image_channels if self.autoencoder is None else self.autoencoder.in_channels

    def train(self, mode: bool = True) -> AnomalySegmenter:
        super().train(mode)
        if self.autoencoder is not None:
            self.autoencoder.eval()  # frozen: it encodes the same way in training and at inference
        return self

    def set_latent_scale(self, scale: float) -> None:
        """The latents' scale factor (1 / std of training latents, Rombach et al. 2022 sec. 4.3.2)."""
        if not scale > 0:
            raise ValueError(f"latent scale factor {scale} must be > 0")
        self.latent_scale.fill_(float(scale))

    def encode(self, x: Tensor) -> Tensor:
        """Model-range image (B, C, *S) -> scaled latents (B, C_z, *L); S is padded (edge values) up to a multiple of
        the downsampling, and to at least the denoiser's latent patch times the downsampling, first."""
        sizes = zip(x.shape[2:], self.autoencoder.downsampling, self.generator.patch_size)
        targets = [max(-(-size // f), p) * f for size, f, p in sizes]
        pad = [p for size, target in zip(reversed(x.shape[2:]), reversed(targets)) for p in (0, target - size)]
        padded = torch.nn.functional.pad(x, pad, mode="replicate") if any(pad) else x
        return self.autoencoder.encode(padded).mode() * self.latent_scale

    def decode(self, z: Tensor, spatial: tuple[int, ...]) -> Tensor:
        """Scaled latents -> model-range image cropped to ``spatial``."""
        image = self.autoencoder.decode(z / self.latent_scale).clamp(-1, 1)
        return image[(slice(None), slice(None), *(slice(0, s) for s in spatial))]

    @property
    def packed_channels(self) -> int:
        return self.num_classes + 2 + self.image_channels

    def unpack(self, packed: Tensor) -> PackedOutputs:
        """Split one case's packed output (K, *spatial), as nnU-Net's predictor returns it, into its parts."""
        if packed.shape[0] != self.packed_channels:
            raise ValueError(f"expected {self.packed_channels} packed channels, got shape {tuple(packed.shape)}")
        logits, anomaly, variance, healthy = packed.split([self.num_classes, 1, 1, self.image_channels])
        return PackedOutputs(logits, anomaly, variance, healthy)

    def set_sampling(self, name: str | None = None, steps: int | None = None, seeds: int | None = None,
                     eta: float | None = None, strengths: tuple[float, ...] | None = None) -> None:
        """Override the plans' DDIM steps, seeds per strength and strengths (ValueError outside (0, 1]). ``name`` and
        ``eta`` are refused: counterfactuals are denoised with deterministic DDIM (eta 0)."""
        if name is not None or eta is not None:
            raise ValueError("anomaly models denoise with deterministic DDIM (eta 0); leave out --sampler and --eta")
        changes = {k: v for k, v in (("steps", steps), ("seeds", seeds)) if v is not None}
        if changes:
            self.generator.sampler = replace(self.generator.sampler, **changes)
        if strengths is not None:
            self.anomaly = replace(self.anomaly, strengths=tuple(check_strength(s) for s in strengths))

    def split(self, image: Tensor) -> tuple[Tensor, Tensor | None]:
        """Preprocessed input (B, C, *spatial) -> (its image channels in the model's [-1, 1] (float32), the anatomy
        mask (B, 1, *spatial) bool, or None without a condition channel)."""
        anatomy = self.anatomy_channel()
        image, mask = (image, None) if anatomy is None else split_anatomy(image, anatomy)
        return self.intensity.to_model(image.float()), mask

    def model_image(self, image: Tensor) -> Tensor:
        """nnU-Net's preprocessed intensities (B, C, ...) -> the image channels in the model's [-1, 1] (float32)."""
        return self.split(image)[0]

    def region(self, x: Tensor, anatomy: Tensor | None) -> Tensor | None:
        """Where the map may be non-zero (B, 1, *spatial) bool, for model-range image channels ``x`` and the anatomy
        mask: the body mask (``mask_to_body``) and the anatomy mask (``mask_to_anatomy``); None when neither applies."""
        body = body_mask(x) if self.anomaly.mask_to_body else None
        if anatomy is None or not self.anomaly.mask_to_anatomy:
            return body
        return anatomy if body is None else body & anatomy.to(body.device)

    def body(self, image: Tensor) -> Tensor | None:
        """``region`` of a preprocessed input (B, C, *spatial): body and anatomy masks as switched on, or None."""
        return self.region(*self.split(image))

    @torch.no_grad()
    def run(self, image: Tensor, threshold: float | None = None) -> AnomalyResult:
        """Counterfactuals, residual maps and the post-processed map of ``image`` (B, C, *spatial, preprocessed).

        With ``threshold``, connected components above it smaller than ``min_component_voxels`` are cleared from the
        map (postprocess); without, the map stays as the median filter and body mask leave it. Runs in the planned
        precision ``amp`` (precision.py): nnU-Net's predictor opens an fp16 autocast on a GPU whatever the plan.
        """
        with planned_autocast(image.device, self.amp):
            return self._run(image, threshold)

    def _run(self, image: Tensor, threshold: float | None = None) -> AnomalyResult:
        anomaly, sampler = self.anomaly, self.generator.sampler
        x, anatomy = self.split(image)
        latent = self.autoencoder is not None
        if latent and not self.latent_scale > 0:
            raise ValueError("this latent anomaly model has no latent scale factor; train it (nnugen_train ... --task "
                             "anomaly) before predicting")
        # in latent mode the input of diffusion is the scaled latent, and the map's reference the autoencoded input
        start = self.encode(x) if latent else x
        reference = self.decode(start, x.shape[2:]) if latent else x
        # the anatomy adapter's condition: the mask's one-hot, cropped with every window of the volume denoiser
        condition = anatomy_condition(anatomy) if self.generator.adapter is not None else None

        def x0(x_t: Tensor, t: Tensor, window_condition: Tensor | None) -> Tensor:
            # latents are not confined to [-1, 1]: their x0 estimates are not clipped
            return x0_denoiser(lambda x, s: self.generator.model_output(x, s, window_condition, use_ema=True),
                               self.generator.alphas_cumprod, self.generator.diffusion.model_output,
                               clip=None if latent else (-1.0, 1.0))(x_t, t)

        def denoise(x_t: Tensor, t: Tensor) -> Tensor:
            # the strengths and seeds ride on the batch axis, member after member: each gets its tile's condition
            repeats = x_t.shape[0] // start.shape[0]
            member_condition = None if condition is None else condition.repeat(repeats, *(1,) * (condition.ndim - 1))
            return volume_denoiser(x0, member_condition, self.generator.patch_size)(x_t, t)

        generators = [torch.Generator(device=x.device).manual_seed(self.seed + k) for k in range(sampler.seeds)]
        members_cf = seeded_counterfactuals(denoise, start, self.generator.host_alphas_cumprod, anomaly.strengths,
                                            sampler.steps, anomaly.noise, anomaly.inversion, generators,
                                            anomaly.max_batch).float()
        if latent:
            members_cf = torch.stack([self.decode(c, x.shape[2:]) for c in members_cf])
        members = torch.stack([residual_map(reference, c) for c in members_cf])
        per_strength = seed_averaged_residuals(reference, members_cf, sampler.seeds) \
            if anomaly.seed_average == "counterfactual" else members
        result = postprocess(ensemble_map(per_strength), anomaly.median_filter, self.region(x, anatomy))
        if threshold is not None:
            result = self.without_small_components(result, threshold)
        intensity = self.intensity
        healthy = torch.stack([intensity.to_preprocessed(c) for c in members_cf])
        return AnomalyResult(result, members, healthy)

    def without_small_components(self, anomaly_map: Tensor, threshold: float) -> Tensor:
        """``anomaly_map`` with the components above ``threshold`` smaller than ``min_component_voxels`` set to 0."""
        return postprocess(anomaly_map, 0, None, self.anomaly.min_component_voxels, threshold)

    def anomaly_map(self, image: Tensor, threshold: float | None = None) -> Tensor:
        """The post-processed anomaly map (B, 1, *spatial) of a preprocessed image (B, C, *spatial)."""
        return self.run(image, threshold).map

    def counterfactual_image(self, image: Tensor) -> Tensor:
        """Pseudo-healthy images (M, B, C, *spatial) in preprocessed intensities, one per strength (and seed)."""
        return self.run(image).counterfactuals

    def map_to_logits(self, anomaly_map: Tensor, threshold: float, scale: float) -> Tensor:
        """(B, 1, *spatial) map -> (B, num_classes, *spatial) logits: [0, scale * (map - threshold), -30, ...]."""
        lesion = scale * (anomaly_map.float() - threshold)
        others = [torch.full_like(lesion, OTHER_LABEL_LOGIT)] * (self.num_classes - 2)
        return torch.cat([torch.zeros_like(lesion), lesion, *others], dim=1)

    def forward(self, x: Tensor, loss: bool = False, condition: Tensor | None = None) -> Tensor:
        """``loss=True``: x is a healthy batch of image channels in [-1, 1] (with the anatomy adapter, ``condition``
        its mask's ``anatomy_condition``) -> the training loss (through forward, as DDP needs). Otherwise x is a
        preprocessed input -> logits (see the module docstring)."""
        if loss:
            return self.generator(x, condition)
        if self._output == "map":
            return self.map_to_logits(self.anomaly_map(x), 0.0, 1.0)
        if not bool(self.threshold_chosen):
            raise ValueError(NO_THRESHOLD)
        threshold = float(self.threshold)
        if self._output == "logits":
            return self.map_to_logits(self.anomaly_map(x, threshold), threshold, self.logit_scale)
        result = self.run(x)
        logits = self.map_to_logits(self.without_small_components(result.map, threshold), threshold,
                                    self.logit_scale)
        variance = result.seed_variance(self.generator.sampler.seeds)
        return torch.cat([logits, result.map, variance, result.counterfactuals.mean(dim=0)], dim=1)
