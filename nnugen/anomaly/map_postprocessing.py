"""From the residual maps of the counterfactuals to what nnU-Net's predictor averages: the map's post-processing
(mean over strengths, median filter, body and anatomy masks, small components above the threshold; anomaly_map.py)
and the lesion logits of a map.

The logits are background 0, lesion ``scale * (map - threshold)``, further labels ``OTHER_LABEL_LOGIT`` (never
chosen), so the argmax is ``map > threshold`` and the softmax ``sigmoid(scale * (map - threshold))``. Both are linear
in the map, so nnU-Net's Gaussian-weighted tile average and its resampling of logits keep the argmax equal to
thresholding the averaged, resampled map. Layout: maps (B, 1, *spatial), images (B, C, *spatial).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from nnugen.anomaly.anomaly_map import body_mask, ensemble_map, erode_mask, postprocess

LOGIT_SCALE = 100.0
"""Lesion logit per unit of anomaly score above the threshold; maps are residuals in [-1, 1] units (0 ... 2), so the
logits stay within nnU-Net's float16 accumulation while 0.01 above the threshold already means p = 0.73."""
OTHER_LABEL_LOGIT = -30.0


@dataclass(frozen=True)
class MapPostprocessing:
    """The post-processing of an anomaly map (``anomaly`` settings of the plans, same names).

    Example::

        >>> post = MapPostprocessing(median_filter=0, mask_to_body=False)
        >>> post.smoothed(torch.ones(2, 1, 1, 4, 4), torch.zeros(1, 1, 4, 4), None).shape
        torch.Size([1, 1, 4, 4])
    """

    median_filter: int = 3
    mask_to_body: bool = True
    mask_to_anatomy: bool = True
    min_component_voxels: int = 0
    erode_region: int = 0

    def region(self, image: Tensor, anatomy: Tensor | None,
               boxes: Sequence[tuple[slice, ...]] | None = None) -> Tensor | None:
        """Where the map may be non-zero (B, 1, *spatial) bool, for model-range image channels ``image`` and the
        anatomy mask: the body mask (``mask_to_body``) and the anatomy mask (``mask_to_anatomy``), eroded by
        ``erode_region`` voxels (anomaly_map.erode_mask); None when neither applies. ``boxes``: per sample, the box
        without nnU-Net's padding (anomaly_map.unpadded_box); the region is found inside it, as on the unpadded case,
        and is False outside it."""
        if not self.mask_to_body and (anatomy is None or not self.mask_to_anatomy):
            return None
        if boxes is None:
            return self._region(image, anatomy)
        if len(boxes) != image.shape[0]:
            raise ValueError(f"one box per sample is needed, got {len(boxes)} boxes for {image.shape[0]} samples")
        region = torch.zeros((image.shape[0], 1, *image.shape[2:]), dtype=torch.bool, device=image.device)
        for sample, box in enumerate(boxes):
            inside = (slice(sample, sample + 1), slice(None), *box)
            region[inside] = self._region(image[inside], None if anatomy is None else anatomy[inside]).to(
                region.device)
        return region

    def _region(self, image: Tensor, anatomy: Tensor | None) -> Tensor:
        body = body_mask(image) if self.mask_to_body else None
        if anatomy is not None and self.mask_to_anatomy:
            body = anatomy if body is None else body & anatomy.to(body.device)
        return erode_mask(body, self.erode_region)

    def smoothed(self, strength_maps: Tensor, image: Tensor, anatomy: Tensor | None,
                 boxes: Sequence[tuple[slice, ...]] | None = None) -> Tensor:
        """(S, B, 1, *spatial) maps of S strengths -> their mean, median-filtered and masked to ``region``."""
        return postprocess(ensemble_map(strength_maps), self.median_filter, self.region(image, anatomy, boxes))

    def without_small_components(self, anomaly_map: Tensor, threshold: float) -> Tensor:
        """``anomaly_map`` with the components above ``threshold`` smaller than ``min_component_voxels`` set to 0."""
        return postprocess(anomaly_map, 0, None, self.min_component_voxels, threshold)


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float; ValueError unless it is a finite number."""
    value = float(threshold)
    if not math.isfinite(value):
        raise ValueError(f"the threshold must be a finite number, got {threshold!r}")
    return value


def map_to_logits(anomaly_map: Tensor, threshold: float, scale: float, num_classes: int) -> Tensor:
    """(B, 1, *spatial) map -> (B, num_classes, *spatial) float32 logits: [0, scale * (map - threshold), -30, ...]."""
    if num_classes < 2:
        raise ValueError(f"anomaly segmentation needs a background and a lesion label, got {num_classes} classes")
    lesion = scale * (anomaly_map.float() - threshold)
    others = [torch.full_like(lesion, OTHER_LABEL_LOGIT)] * (num_classes - 2)
    return torch.cat([torch.zeros_like(lesion), lesion, *others], dim=1)
