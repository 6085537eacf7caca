"""One case through nnU-Net's predictor (sliding window with Gaussian weighting, mirroring if allowed, folds
averaged) with a sampled ensemble of S members whose noise comes from the case's seed.

Member k is sampled with seed ``case_seed + k`` in every mode, so the ensemble is the same whether it is averaged
inside the network (one sliding window, ``seeds=S``), passed with its uncertainty as per-tile moments (one sliding
window of a ``moments_pass.moments_predictor``, ``seeds=S``) or predicted member by member (S sliding windows,
``seeds=1`` each: the old uncertainty path, S times the cost, kept as the reference the moments pass is checked and
measured against)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from nnugen.inference.moments_pass import split_moments
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
                 with_uncertainty: bool, moments_predictor=None) -> CasePrediction:
    """``data`` is nnU-Net's preprocessed case (C_in, *network grid); ``segmenter`` is ``predictor.network``
    (unwrapped), sampling inside the caller's ``segmenter.sampling(...)`` block (sampler, steps, eta); the seed and
    ensemble size of each pass are said here, for that pass only. With uncertainty, ``moments_predictor`` (built once
    per run by ``moments_pass.moments_predictor``) gives ensemble and maps in one sliding window; without it the
    members are predicted one by one."""
    sampler = segmenter.sampling_request.sampler
    if with_uncertainty and moments_predictor is None:
        return _member_by_member(predictor, segmenter, data, case, seed, members)
    one_window = moments_predictor if with_uncertainty else predictor
    with segmenter.sampling(replace(sampler, seeds=members), seed=seed):
        output = finite_logits(one_window.predict_logits_from_preprocessed_data(data), case)
    return CasePrediction(*split_moments(output, _LOG_FLOOR)) if with_uncertainty else CasePrediction(output, None)


def _member_by_member(predictor, segmenter: DiffusionSegmenter, data: Tensor, case: str, seed: int,
                      members: int) -> CasePrediction:
    """S sliding windows of one member each, summarised by Welford's running moments (uncertainty.py)."""
    sampler = segmenter.sampling_request.sampler
    moments = None
    for k in range(members):
        with segmenter.sampling(replace(sampler, seeds=1), seed=seed, first_member=k):
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
