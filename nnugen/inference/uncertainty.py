"""Uncertainty of an ensemble of sampled segmentations (Wolleb et al. 2022, "Diffusion models for implicit image
segmentation ensembles"; Rahman et al. 2023, "Ambiguous medical image segmentation using diffusion models").

Members arrive one at a time (one sliding-window prediction each), so the ensemble is summarised by running moments
(Welford 1962) instead of a stack of S probability maps: memory stays at two maps of (C, *spatial) whatever S is.

- predictive entropy  H[p_bar] = -sum_c p_bar_c log p_bar_c of the mean class probability p_bar, in nats:
  0 where the ensemble is certain, log C where it is uniform over C classes;
- member variance     (1/C) sum_c Var_k[p_c^(k)], the population variance of each class probability across the
  S members, averaged over classes: 0 where the members agree, at most 1/4.

Shapes: probabilities are (C, *spatial) (nnU-Net's predictor works on one case at a time, without a batch axis);
maps are (*spatial). 2D and 3D share every line. Precision: members are promoted to float32 before any arithmetic and
every map is float32, also for fp16 / bf16 members under autocast (whose elementwise ops and sums keep float32).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

MAP_NAMES = ("entropy", "variance")
"""The maps ``uncertainty_maps`` stacks, in order; also the suffixes of the files nnugen_predict writes."""


class EnsembleMoments(NamedTuple):
    """Running moments of the members' class probabilities: ``count`` members, their ``mean`` (C, *spatial) and
    ``m2`` (C, *spatial), the sum of squared deviations from the mean (Welford's M2)."""

    count: int
    mean: Tensor
    m2: Tensor


def add_member(moments: EnsembleMoments | None, probabilities: Tensor) -> EnsembleMoments:
    """Welford's update with one member's probabilities (C, *spatial); ``None`` starts a new ensemble.
    Identical members leave ``m2`` exactly zero (every deviation is exactly zero)."""
    probabilities = probabilities.float()
    if moments is None:
        return EnsembleMoments(1, probabilities.clone(), torch.zeros_like(probabilities))
    count = moments.count + 1
    delta = probabilities - moments.mean  # x - mean_{n-1}
    mean = moments.mean + delta / count  # mean_n
    m2 = moments.m2 + delta * (probabilities - mean)  # M2_n = M2_{n-1} + (x - mean_{n-1})(x - mean_n)
    return EnsembleMoments(count, mean, m2)


def predictive_entropy(mean_probabilities: Tensor) -> Tensor:
    """-sum_c p_c log p_c over the class axis 0 of (C, *spatial) -> (*spatial), in nats; 0 log 0 counts as 0."""
    p = mean_probabilities.float().clamp(0.0, 1.0)
    return -torch.special.xlogy(p, p).sum(dim=0)


def class_mean_variance(moments: EnsembleMoments) -> Tensor:
    """Population variance across members of each class probability, averaged over classes: (*spatial)."""
    return (moments.m2 / moments.count).clamp_min(0.0).mean(dim=0)


def member_variance(probabilities: Tensor) -> Tensor:
    """``class_mean_variance`` of a stack of members (S, C, *spatial) -> (*spatial)."""
    if probabilities.shape[0] == 0:
        raise ValueError("member_variance needs at least one member (S >= 1)")
    moments = None
    for member in probabilities:
        moments = add_member(moments, member)
    return class_mean_variance(moments)


def uncertainty_maps(moments: EnsembleMoments) -> Tensor:
    """The maps named in ``MAP_NAMES``, stacked: (2, *spatial) float32."""
    return torch.stack([predictive_entropy(moments.mean), class_mean_variance(moments)])
