"""The modules through which nnU-Net runs an ``AnomalySegmenter`` besides the segmenter itself, each with one kind of
output. A view holds no weights of its own: its parameters, buffers, train / eval mode and state dict (the same keys)
are the segmenter's, so nnU-Net's predictor loads a fold's checkpoint into a view exactly as into the segmenter, and a
checkpoint written through a view is the segmenter's.

- ``MapView``: the raw anomaly map, in the layout of the logits (threshold 0, scale 1); the final validation averages
  it with nnU-Net's sliding window to choose the threshold.
- ``ErosionSearchView``: the raw map at every erosion of its region 0..N from the same counterfactuals, for the
  final validation to choose the erosion with the threshold.
- ``PackedView``: every output of ``nnugen_predict`` stacked on the channel axis, so that one pass of nnU-Net's sliding
  window averages all of them over tiles and folds; ``unpack`` splits one case again.
- ``TrainingLoss``: the training loss of a batch of healthy cases. The trainer trains through it, and under DDP it is
  the module DDP wraps, so the loss goes through the forward of the wrapped module as DDP needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from nnugen.anomaly import anatomy_condition, check_threshold, map_to_logits
from nnugen.models.anomaly_outputs import PackedOutputs

if TYPE_CHECKING:
    from nnugen.models.anomaly_segmenter import AnomalySegmenter


class SegmenterView(nn.Module):
    """A module over ``segmenter`` that shares all its state (see the module docstring)."""

    def __init__(self, segmenter: AnomalySegmenter):
        super().__init__()
        self.segmenter = segmenter

    def state_dict(self, *args, **kwargs) -> dict[str, Any]:
        return self.segmenter.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        return self.segmenter.load_state_dict(state_dict, strict, assign)


class MapView(SegmenterView):
    """forward: preprocessed input (B, C_in, *spatial) -> (B, num_classes, *spatial), the raw anomaly map in channel 1
    and the other channels as in the logits (``map_to_logits`` at threshold 0, scale 1)."""

    def forward(self, image: Tensor) -> Tensor:
        return map_to_logits(self.segmenter.anomaly_map(image), 0.0, 1.0, self.segmenter.num_classes)


class ErosionSearchView(SegmenterView):
    """forward: preprocessed input (B, C_in, *spatial) -> (B, ``widest`` + 1, *spatial), channel k the raw map with
    its region eroded by k voxels, per tile as prediction erodes it; the final validation stitches the channels with
    nnU-Net's sliding window and chooses the erosion with the threshold (``anomaly.erode_search``)."""

    def __init__(self, segmenter: AnomalySegmenter, widest: int):
        super().__init__(segmenter)
        self.widest = widest

    def forward(self, image: Tensor) -> Tensor:
        return self.segmenter.maps_by_erosion(image, self.widest)


class PackedView(SegmenterView):
    """forward: preprocessed input (B, C_in, *spatial) -> (B, ``channels``, *spatial): the logits of
    ``AnomalySegmenter.forward``, the map (small components kept), its variance across seeds and the mean
    counterfactual over strengths and seeds (preprocessed intensities).

    ``threshold``: the threshold of the logits; None takes the segmenter's stored one (that of the fold whose
    parameters nnU-Net's predictor loaded last), a number takes precedence over it (``--threshold-file``)."""

    def __init__(self, segmenter: AnomalySegmenter, threshold: float | None = None):
        super().__init__(segmenter)
        self.threshold = None if threshold is None else check_threshold(threshold)

    @property
    def channels(self) -> int:
        return self.segmenter.num_classes + 2 + self.segmenter.image_channels

    def forward(self, image: Tensor) -> Tensor:
        segmenter = self.segmenter
        threshold = segmenter.stored_threshold() if self.threshold is None else self.threshold
        result = segmenter.run(image)
        kept = segmenter.postprocessing.without_small_components(result.map, threshold)
        logits = map_to_logits(kept, threshold, segmenter.logit_scale, segmenter.num_classes)
        variance = result.seed_variance(segmenter.sampling_request.sampler.seeds)
        return torch.cat([logits, result.map, variance, result.counterfactuals.mean(dim=0)], dim=1)

    def unpack(self, packed: Tensor) -> PackedOutputs:
        """Split one case's packed output (K, *spatial), as nnU-Net's predictor returns it, into its parts."""
        if packed.shape[0] != self.channels:
            raise ValueError(f"expected {self.channels} packed channels, got shape {tuple(packed.shape)}")
        logits, anomaly, variance, healthy = packed.split([self.segmenter.num_classes, 1, 1,
                                                           self.segmenter.image_channels])
        return PackedOutputs(logits, anomaly, variance, healthy)


class TrainingLoss(SegmenterView):
    """forward: healthy cases as nnU-Net's loader gives them (B, C_in, *patch, preprocessed) -> the generator's
    eps-MSE training loss (a scalar) on their image channels in [-1, 1], in latent mode on their scaled latents (the
    frozen autoencoder encodes without gradients), with an anatomy adapter conditioned on the mask's one-hot."""

    def forward(self, data: Tensor) -> Tensor:
        segmenter = self.segmenter
        x, anatomy = segmenter.split(data)
        codec = segmenter.codec()
        if codec is not None:
            with torch.no_grad():
                x = codec.encode(x)
        condition = anatomy_condition(anatomy) if segmenter.generator.adapter is not None else None
        return segmenter.generator(x, condition)


def packed_dataset_json(dataset_json: dict, channels: int) -> dict:
    """``dataset_json`` for nnU-Net's predictor over a view of ``channels`` outputs (``PackedView``,
    ``ErosionSearchView``): one plain label per channel, since nnU-Net's label manager counts the channels of its
    result buffer from the labels; the pass never turns them into a segmentation."""
    labels = {"background": 0, **{f"packed_{k}": k for k in range(1, channels)}}
    return {**{k: v for k, v in dataset_json.items() if k != "regions_class_order"}, "labels": labels}
