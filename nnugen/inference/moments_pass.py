"""The ensemble and its uncertainty maps in ONE sliding-window pass of nnU-Net's predictor (issue 16).

Per tile, ``MomentsView`` samples the S members as one batch (``DiffusionSegmenter.sample_probabilities``) and
returns 2C channels: the member mean of the class probabilities, mean_k p_k, and their member variance,
Var_k p_k (population variance, as ``uncertainty.EnsembleMoments``). nnU-Net's predictor averages whatever the
network returns linearly: mirrored predictions with equal weights, overlapping tiles with Gaussian weights w_j, folds
with equal weights. The stitched result is therefore sum_j w_j mean_k p_k^(j) and sum_j w_j Var_k p_k^(j); the
entropy of the first and the class mean of the second are the maps of ``uncertainty.MAP_NAMES``.

What the variance map is, where tiles overlap (or mirrors or folds are averaged). The old path, S sliding windows
one member each, stitched every member first, p_k = sum_j w_j p_k^(j), and took Var_k of the stitched members. Here
the variance is the Gaussian-weighted average of the tiles' member variances. Both agree exactly where one tile
covers a voxel (no overlap, no mirroring, one fold). Elsewhere, sd being a norm, Var_k(sum_j w_j p_k^(j)) <=
sum_j w_j Var_k p_k^(j): the map here is an upper bound of the old one, and it is below the variance of the mixture
over tiles and members (which adds the spread of the tiles' means, sum_j w_j (mean_k p^(j) - mean)^2), the value a
pass returning E[p] and E[p^2] would give. The mean is the arithmetic mean over tiles of the probabilities, where
the plain pass (no uncertainty) averages their logs; both sum to one after nnU-Net's softmax.

The pass runs in an ``nnUNetPredictor`` of its own, as the anomaly models' packed pass does (anomaly_prediction.py,
``packed_predictor``): a copy of the model folder's predictor set up with nnU-Net's public ``manual_initialization``,
the view as its network and a dataset.json with 2C labels, since nnU-Net sizes its result buffer by the label count.
nnU-Net is not patched; the model folder's predictor is left as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from nnugen.inference.uncertainty import predictive_entropy
from nnugen.models.diffusion_segmenter import DiffusionSegmenter


class MomentsView(nn.Module):
    """forward: preprocessed input (B, C_in, *spatial) -> (B, 2C, *spatial): [mean_k p_k, Var_k p_k] over the
    S = sampler.seeds members of the caller's ``segmenter.sampling`` block. Holds no weights of its own: parameters,
    buffers, mode and state dict are the segmenter's, so nnU-Net loads each fold into the view as into the model."""

    def __init__(self, segmenter: DiffusionSegmenter):
        super().__init__()
        self.segmenter = segmenter

    @property
    def channels(self) -> int:
        return 2 * self.segmenter.num_classes

    def state_dict(self, *args, **kwargs) -> dict[str, Any]:
        return self.segmenter.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        return self.segmenter.load_state_dict(state_dict, strict, assign)

    def forward(self, image: Tensor) -> Tensor:
        members = self.segmenter.sample_probabilities(image)  # (S, B, C, *spatial) float32
        return torch.cat([members.mean(dim=0), members.var(dim=0, correction=0)], dim=1)


def moments_predictor(predictor, segmenter: DiffusionSegmenter):
    """The one-window pass: a copy of the model folder's ``nnUNetPredictor`` (sliding window, mirroring, device,
    the folds' parameters) whose network is a ``MomentsView`` of ``segmenter`` and whose result buffer has 2C
    channels. Build it once per run; ``predictor`` itself is left as it is."""
    from nnugen.inference.anomaly_prediction import packed_predictor

    return packed_predictor(predictor, MomentsView(segmenter))


def split_moments(stitched: Tensor, log_floor: float) -> tuple[Tensor, Tensor]:
    """One case's stitched pass (2C, *spatial), float32 -> (logits (C, *spatial): log of the mean probability,
    floored at ``log_floor``; maps (2, *spatial): predictive entropy and class-mean member variance)."""
    if stitched.shape[0] % 2:
        raise ValueError(f"expected 2C channels (mean, variance) from the moments pass, got shape "
                         f"{tuple(stitched.shape)}")
    mean, variance = stitched.float().chunk(2)
    # fp16 accumulation in nnU-Net's buffer can leave a probability a rounding step below 0 or the sum off 1
    mean = mean.clamp_min(0.0)
    mean = mean / mean.sum(dim=0, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    maps = torch.stack([predictive_entropy(mean), variance.clamp_min(0.0).mean(dim=0)])
    return mean.clamp_min(log_floor).log(), maps
