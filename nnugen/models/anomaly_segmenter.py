"""``AnomalySegmenter``: counterfactual anomaly segmentation (pDDPM / cDDPM, Behrendt et al. 2023; AnoDDPM, Wyatt et
al. 2022; THOR, Bercea et al. 2024) as nnU-Net's trainer and predictor see it.

A diffusion model of healthy images (an ``ImageGenerator`` in image mode, held by composition: its EMA weights and
eps-MSE training loss are reused as they are) turns a partially noised scan back into a pseudo-healthy one; the
residual to the input is the anomaly map (nnugen.anomaly). The model also carries the threshold chosen on the fold's
validation cases (buffer ``threshold``, with ``threshold_chosen`` telling whether it has been chosen: a NaN sentinel
would be refused by the checkpoint writer, which never saves non-finite tensors).

- ``forward(x0, loss=True)``: healthy batch in [-1, 1] (B, C, *patch) -> the generator's training loss (a scalar).
- ``anomaly_map(image)``: image in nnU-Net's preprocessed intensities (B, C, *spatial) -> map (B, 1, *spatial):
  intensities mapped to [-1, 1] with the plans' intensity map, counterfactuals at every strength (and seed), residual
  maps, their mean, then a median filter and the body mask (``postprocess``).
- ``forward(image)`` in eval mode: the logits (B, C_out, *spatial) nnU-Net's predictor wants, one tensor per tile:
  background 0, lesion ``logit_scale * (map - threshold)`` (further labels -30, never chosen), so the argmax is
  ``map > threshold`` and the softmax ``sigmoid(logit_scale * (map - threshold))``. Both are linear in the map, so
  nnU-Net's Gaussian-weighted tile average and its resampling of logits keep the argmax equal to thresholding the
  averaged, resampled map. Connected components smaller than ``min_component_voxels`` are removed per tile.

Every call draws its noise from a ``torch.Generator`` seeded with ``seed`` (member k of ``sampler.seeds`` uses
``seed + k``), so a given image always gets the same map.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nnugen.anomaly import body_mask, ensemble_map, multi_strength_counterfactuals, postprocess, residual_map
from nnugen.config import AnomalySettings, IntensitySettings
from nnugen.models.image_generator import ImageGenerator, volume_denoiser
from nnugen.models.intensity_map import IntensityMap

LOGIT_SCALE = 100.0
"""Lesion logit per unit of anomaly score above the threshold; maps are residuals in [-1, 1] units (0 ... 2), so the
logits stay within nnU-Net's float16 accumulation while 0.01 above the threshold already means p = 0.73."""
OTHER_LABEL_LOGIT = -30.0
NO_THRESHOLD = ("this anomaly model has no threshold yet: run the final validation (nnugen_train ID FOLD CONFIG "
                "--task anomaly --val) to choose it on the fold's validation cases; it is stored in "
                "checkpoint_final.pth")


@dataclass(frozen=True)
class AnomalyResult:
    """What one anomaly run computes. map: (B, 1, *spatial) post-processed anomaly map; members: (M, B, 1, *spatial)
    raw residual maps of the M = strengths x seeds counterfactuals; counterfactuals: (M, B, C, *spatial)
    pseudo-healthy images in nnU-Net's preprocessed intensities (strength-major: all strengths of seed 0 first)."""

    map: Tensor
    members: Tensor
    counterfactuals: Tensor


class AnomalySegmenter(nn.Module):
    def __init__(self, generator: ImageGenerator, anomaly: AnomalySettings, intensity: IntensitySettings,
                 num_classes: int = 2, logit_scale: float = LOGIT_SCALE):
        super().__init__()
        if generator.generation.mode != "image":
            raise ValueError(f"the anomaly model needs an image-only generator, got mode {generator.generation.mode!r}")
        if num_classes < 2:
            raise ValueError(f"anomaly segmentation needs a background and a lesion label, got {num_classes} classes")
        self.generator = generator
        self.anomaly = anomaly
        # the plans' map, as the trainer uses it: the predictor rebuilds it from the model folder's plans.json
        self.intensity = IntensityMap(intensity)
        self.num_classes = num_classes
        self.logit_scale = logit_scale
        self.seed = 0
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("threshold_chosen", torch.zeros((), dtype=torch.bool))
        self._map_output = False

    def set_threshold(self, threshold: float) -> None:
        """Store the threshold chosen on validation data (anomalous where map > threshold)."""
        if not torch.isfinite(torch.tensor(float(threshold))):
            raise ValueError(f"the threshold must be a finite number, got {threshold!r}")
        self.threshold.fill_(float(threshold))
        self.threshold_chosen.fill_(True)

    @contextmanager
    def map_output(self) -> Iterator[None]:
        """Inside: eval ``forward`` returns the raw map in channel 1 (threshold 0, scale 1) instead of thresholded
        logits, so nnU-Net's sliding window averages maps; used to choose the threshold."""
        self._map_output = True
        try:
            yield
        finally:
            self._map_output = False

    def model_image(self, image: Tensor) -> Tensor:
        """nnU-Net's preprocessed intensities (B, C, ...) -> the model's [-1, 1] (float32)."""
        return self.intensity.to_model(image.float())

    def body(self, image: Tensor) -> Tensor | None:
        """Body mask (B, 1, *spatial) bool of a preprocessed image, or None when ``mask_to_body`` is off."""
        return body_mask(self.model_image(image)) if self.anomaly.mask_to_body else None

    @torch.no_grad()
    def run(self, image: Tensor, threshold: float | None = None) -> AnomalyResult:
        """Counterfactuals, residual maps and the post-processed map of ``image`` (B, C, *spatial, preprocessed).

        With ``threshold``, connected components above it smaller than ``min_component_voxels`` are cleared from the
        map (postprocess); without, the map stays as the median filter and body mask leave it.
        """
        anomaly, sampler = self.anomaly, self.generator.sampler
        x = self.model_image(image)
        denoise = volume_denoiser(self.generator._x0, None, self.generator.patch_size)
        counterfactuals = []
        for k in range(sampler.seeds):
            generator = torch.Generator(device=x.device).manual_seed(self.seed + k)
            counterfactuals.append(multi_strength_counterfactuals(
                denoise, x, self.generator.alphas_cumprod, anomaly.strengths, sampler.steps, anomaly.noise,
                anomaly.inversion, generator).float())
        members_cf = torch.cat(counterfactuals)
        members = torch.stack([residual_map(x, c) for c in members_cf])
        mask = body_mask(x) if anomaly.mask_to_body else None
        components = anomaly.min_component_voxels if threshold is not None else 0
        result = postprocess(ensemble_map(members), anomaly.median_filter, mask, components, threshold)
        healthy = torch.stack([self.intensity.to_preprocessed(c) for c in members_cf])
        return AnomalyResult(result, members, healthy)

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

    def forward(self, x: Tensor, loss: bool = False) -> Tensor:
        """``loss=True``: x is a healthy batch in [-1, 1] -> the training loss (through forward, as DDP needs).
        Otherwise x is a preprocessed image -> logits (see the module docstring)."""
        if loss:
            return self.generator(x)
        if self._map_output:
            return self.map_to_logits(self.anomaly_map(x), 0.0, 1.0)
        if not bool(self.threshold_chosen):
            raise ValueError(NO_THRESHOLD)
        threshold = float(self.threshold)
        return self.map_to_logits(self.anomaly_map(x, threshold), threshold, self.logit_scale)
