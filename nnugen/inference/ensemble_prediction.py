"""One case through nnU-Net's predictor (sliding window with Gaussian weighting, mirroring if allowed, folds
averaged) with a sampled ensemble of S members whose noise comes from the case's seed.

Member k is sampled with seed ``case_seed + k`` in both modes, so the ensemble is the same whether it is averaged
inside the network (one sliding window, ``seeds=S``: faster) or predicted member by member (S sliding windows,
``seeds=1`` each: needed for the uncertainty maps, which need every member's probabilities)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from nnugen.inference.uncertainty import add_member, uncertainty_maps
from nnugen.models.diffusion_segmenter import DiffusionSegmenter

_LOG_FLOOR = 1e-8  # the DiffusionSegmenter's own floor for log probabilities


class NonFiniteProbabilities(ValueError):
    """The network produced NaN / Inf for a case; nothing of that case is written."""


@dataclass(frozen=True)
class CasePrediction:
    logits: Tensor
    """(C, *network grid) float32: log of the ensemble's mean class probability."""
    maps: Tensor | None
    """(2, *network grid) float32: predictive entropy and member variance (uncertainty.MAP_NAMES), or None."""


def predict_case(predictor, segmenter: DiffusionSegmenter, data: Tensor, case: str, seed: int, members: int,
                 with_uncertainty: bool) -> CasePrediction:
    """``data`` is nnU-Net's preprocessed case (C_in, *network grid); ``segmenter`` is ``predictor.network``
    (unwrapped), sampling inside the caller's ``segmenter.sampling(...)`` block (sampler, steps, eta); the seed and
    ensemble size of each pass are said here, for that pass only."""
    sampler = segmenter.sampling_request.sampler
    if not with_uncertainty:
        with segmenter.sampling(replace(sampler, seeds=members), seed=seed):
            logits = finite_logits(predictor.predict_logits_from_preprocessed_data(data), case)
        return CasePrediction(logits, None)
    moments = None
    for k in range(members):
        with segmenter.sampling(replace(sampler, seeds=1), seed=seed + k):
            logits = finite_logits(predictor.predict_logits_from_preprocessed_data(data), case)
        moments = add_member(moments, predictor.label_manager.apply_inference_nonlin(logits))
    return CasePrediction(moments.mean.clamp_min(_LOG_FLOOR).log(), uncertainty_maps(moments))


def finite_logits(logits: Tensor, case: str) -> Tensor:
    logits = logits.float()
    if not bool(torch.isfinite(logits).all()):
        raise NonFiniteProbabilities(f"case {case}: the network's probabilities are not finite (NaN / Inf); nothing "
                                     "was written for it. Check the image for NaN voxels (nnugen_check) and the "
                                     "checkpoint (a diverged training)")
    return logits
