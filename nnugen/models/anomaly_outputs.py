"""What an ``AnomalySegmenter`` computes for one input, and the packed outputs nnU-Net's predictor averages."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from nnugen.anomaly import uncertainty


@dataclass(frozen=True)
class AnomalyResult:
    """What one anomaly run computes. map: (B, 1, *spatial) post-processed anomaly map; members: (M, B, 1, *spatial)
    raw residual maps of the M = strengths x seeds counterfactuals; counterfactuals: (M, B, C, *spatial)
    pseudo-healthy images in nnU-Net's preprocessed intensities (strength-major: all strengths of seed 0 first)."""

    map: Tensor
    members: Tensor
    counterfactuals: Tensor

    def seed_variance(self, seeds: int) -> Tensor:
        """(B, 1, *spatial) population variance across seeds of the per-seed maps (each the mean of the raw
        residuals over strengths, before post-processing); 0 everywhere for one seed."""
        per_seed = self.members.reshape(seeds, -1, *self.members.shape[1:]).mean(dim=1)
        return uncertainty(per_seed) ** 2


@dataclass(frozen=True)
class PackedOutputs:
    """``PackedView.unpack`` of a packed tensor (K, *spatial): logits (num_classes, ...), map (1, ...),
    variance (1, ...), counterfactual (C, ...) in preprocessed intensities (the mean over strengths and seeds)."""

    logits: Tensor
    map: Tensor
    variance: Tensor
    counterfactual: Tensor
