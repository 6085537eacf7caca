"""How well an uncertainty map finds the voxels a segmentation gets wrong, and how calibrated its probabilities are.

- Error detection (Mehrtash et al. 2020, "Confidence calibration and predictive uncertainty estimation for deep medical
  image segmentation"; Jungo & Reyes 2019, "Assessing reliability and challenges of uncertainty estimations for medical
  image segmentation"): the positives are the wrongly labelled voxels, ``prediction != reference``, the score is the
  uncertainty (entropy, variance: higher = less sure). AUROC is scikit-learn's ``roc_auc_score``, AUPRC its
  ``average_precision_score`` (the step-wise area, not the trapezoid). Both are undefined for a case with no wrong voxel
  or only wrong voxels: they are then NaN with the reason, and per-case means skip them.
- Calibration (Guo et al. 2017, "On calibration of modern neural networks", eq. 3): the top-label expected calibration
  error of the mean class probability with 15 equal-width bins ``((m-1)/15, m/15]``, a confidence of exactly 0 in the
  first bin. Each evaluated voxel is one sample: its confidence is ``max_c p_c``, it is correct when ``argmax_c p_c``
  (first maximum on ties) equals the reference label; ``ECE = sum_m |B_m|/N |acc(B_m) - conf(B_m)|
  = (1/N) sum_m |sum_{B_m} correct - sum_{B_m} confidence|``. Bins are kept as sums, so pooling cases is exact.

Which voxels count: every voxel, minus those whose reference is nnU-Net's ignore label (as nnU-Net's
``compute_tp_fp_fn_tn`` leaves them out), optionally only inside a ``region`` mask.

Pooling: all evaluated voxels of all cases concatenated. When there are more than ``capacity`` of them (default
``POOLED_VOXELS``), the pooled AUROC / AUPRC use a uniform random sample of exactly ``capacity`` voxels without
replacement, drawn deterministically: voxel ``i`` of case ``k`` gets the key ``default_rng([seed, k]).random()[i]``
and the ``capacity`` smallest keys are kept (bottom-k sampling), whatever order the cases arrive in.

Arrays are numpy, any shape (2D or 3D), probabilities ``(C, *spatial)``. No torch."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

NUM_BINS = 15
"""Equal-width confidence bins of the expected calibration error (Guo et al. 2017)."""
POOLED_VOXELS = 10_000_000
"""Most voxels the pooled AUROC / AUPRC sort at once (about 130 MB with two scores); above it a seeded sample."""


@dataclass(frozen=True)
class Detection:
    """AUROC / AUPRC of one score for the wrong ones among ``voxels`` voxels; NaN with ``reason`` when undefined."""

    auroc: float
    auprc: float
    voxels: int
    errors: int
    reason: str | None = None

    def as_json(self) -> dict:
        """JSON-ready: NaN as ``None`` (standard JSON has no NaN)."""
        return {"auroc": _finite_or_none(self.auroc), "auprc": _finite_or_none(self.auprc), "voxels": self.voxels,
                "errors": self.errors, "reason": self.reason}


def _finite_or_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def evaluated_voxels(reference: np.ndarray, ignore_label: int | None = None,
                     region: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask (shape of ``reference``) of the voxels that count: not the ignore label, inside ``region``."""
    mask = np.ones(reference.shape, dtype=bool) if ignore_label is None else reference != ignore_label
    if region is not None:
        if region.shape != reference.shape:
            raise ValueError(f"region shape {region.shape} differs from the reference's {reference.shape}; pass a "
                             "mask on the reference's grid")
        mask &= region.astype(bool)
    return mask


def error_mask(prediction: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``prediction != reference``, the wrongly labelled voxels; shapes must match."""
    _same_shape(prediction, reference, "prediction")
    return np.asarray(prediction) != np.asarray(reference)


def _same_shape(array: np.ndarray, reference: np.ndarray, what: str) -> None:
    if array.shape != reference.shape:
        raise ValueError(f"{what} shape {array.shape} differs from the reference's {reference.shape}; both must be on "
                         "the reference image's grid")


def error_detection(scores: np.ndarray, errors: np.ndarray) -> Detection:
    """AUROC and AUPRC of ``scores`` (higher = less certain) for ``errors`` (bool), flattened, same shape.
    NaN with a reason when there is no voxel, no wrong voxel or no correct one (both metrics, by this module's rule)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    _same_shape(scores, errors, "uncertainty")
    scores, errors = np.asarray(scores).ravel(), np.asarray(errors, dtype=bool).ravel()
    voxels, wrong = int(errors.size), int(errors.sum())
    reason = ("no evaluated voxel" if voxels == 0 else "no wrongly labelled voxel" if wrong == 0
              else "every voxel is wrongly labelled" if wrong == voxels else None)
    if reason is None and not np.isfinite(scores).all():
        raise ValueError("the uncertainty holds NaN or Inf voxels; rewrite the uncertainty image")
    if reason is not None:
        return Detection(math.nan, math.nan, voxels, wrong, reason)
    return Detection(float(roc_auc_score(errors, scores)), float(average_precision_score(errors, scores)),
                     voxels, wrong)


def predictive_entropy(probabilities: np.ndarray) -> np.ndarray:
    """``-sum_c p_c log p_c`` over axis 0 of ``(C, *spatial)`` -> ``(*spatial)`` float32, in nats; ``0 log 0 = 0``.
    For a baseline nnU-Net, its softmax entropy (the same formula nnugen_predict writes as ``CASE_entropy``)."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return (-terms.sum(axis=0)).astype(np.float32)


class CalibrationBins(NamedTuple):
    """Per bin: voxel count, sum of confidences, number correct (each ``(num_bins,)``); ``+`` pools cases exactly."""

    count: np.ndarray
    confidence: np.ndarray
    correct: np.ndarray

    def __add__(self, other: CalibrationBins) -> CalibrationBins:  # type: ignore[override]
        return CalibrationBins(self.count + other.count, self.confidence + other.confidence,
                               self.correct + other.correct)

    def expected_calibration_error(self) -> float:
        """``(1/N) sum_m |correct_m - confidence_m|``; NaN when no voxel was evaluated."""
        total = int(self.count.sum())
        return math.nan if total == 0 else float(np.abs(self.correct - self.confidence).sum() / total)


def calibration_bins(probabilities: np.ndarray, reference: np.ndarray, evaluated: np.ndarray | None = None,
                     num_bins: int = NUM_BINS) -> CalibrationBins:
    """Top-label bins of ``probabilities`` ``(C, *spatial)`` against the integer ``reference`` ``(*spatial)`` over the
    ``evaluated`` voxels (all if None)."""
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    if probabilities.ndim != reference.ndim + 1:
        raise ValueError(f"probabilities must be (C, *spatial) for a reference of shape {reference.shape}, got "
                         f"{probabilities.shape}")
    _same_shape(probabilities[0], reference, "probabilities' spatial")
    evaluated = np.ones(reference.shape, dtype=bool) if evaluated is None else evaluated
    confidence = probabilities.max(axis=0)[evaluated].astype(np.float64)
    if not np.isfinite(confidence).all():
        raise ValueError("the probabilities hold NaN or Inf voxels; predict the case again")
    correct = (probabilities.argmax(axis=0) == reference)[evaluated]
    index = np.clip(np.ceil(confidence * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    return CalibrationBins(np.bincount(index, minlength=num_bins).astype(np.int64),
                           np.bincount(index, weights=confidence, minlength=num_bins),
                           np.bincount(index, weights=correct.astype(np.float64), minlength=num_bins))


def expected_calibration_error(probabilities: np.ndarray, reference: np.ndarray, evaluated: np.ndarray | None = None,
                               num_bins: int = NUM_BINS) -> float:
    """Top-label ECE of one case (see the module docstring); NaN when no voxel is evaluated."""
    return calibration_bins(probabilities, reference, evaluated, num_bins).expected_calibration_error()


class CaseSample(NamedTuple):
    """At most ``capacity`` voxels of one case: their sampling keys, error flags and one score array per name."""

    keys: np.ndarray
    errors: np.ndarray
    scores: dict[str, np.ndarray]
    voxels: int


def case_sample(case_index: int, errors: np.ndarray, scores: dict[str, np.ndarray], capacity: int = POOLED_VOXELS,
                seed: int = 0) -> CaseSample:
    """The voxels of case ``case_index`` that can be among the pool's ``capacity`` smallest keys: all of them, or the
    ``capacity`` with the smallest keys. ``errors`` and every score are the evaluated voxels, flattened alike."""
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1 voxel, got {capacity}")
    errors = np.asarray(errors, dtype=bool).ravel()
    for name, score in scores.items():
        if np.asarray(score).size != errors.size:
            raise ValueError(f"score {name!r} has {np.asarray(score).size} voxels, the errors {errors.size}")
    keys = np.random.default_rng([seed, case_index]).random(errors.size)
    keep = np.argpartition(keys, capacity - 1)[:capacity] if errors.size > capacity else slice(None)
    return CaseSample(keys[keep], errors[keep], {name: np.asarray(s, dtype=np.float32).ravel()[keep]
                                                 for name, s in scores.items()}, int(errors.size))


class PooledSample:
    """The pooled voxels of many cases (see the module docstring): ``add`` each case's ``case_sample``, in any order,
    then ``detection(name)``. Memory stays at about twice ``capacity`` voxels."""

    def __init__(self, capacity: int = POOLED_VOXELS):
        self.capacity = capacity
        self.voxels = 0
        self._parts: list[CaseSample] = []
        self._kept = 0

    @property
    def subsampled(self) -> bool:
        return self.voxels > self.capacity

    def add(self, sample: CaseSample) -> None:
        if self._parts and set(sample.scores) != set(self._parts[0].scores):
            raise ValueError(f"every case must have the same scores: {sorted(sample.scores)} vs "
                             f"{sorted(self._parts[0].scores)}")
        self.voxels += sample.voxels
        self._parts.append(sample)
        self._kept += sample.keys.size
        if self._kept > 2 * self.capacity:
            self._parts = [self._merged()]
            self._kept = self._parts[0].keys.size

    def _merged(self) -> CaseSample:
        keys = np.concatenate([p.keys for p in self._parts])
        keep = np.argpartition(keys, self.capacity - 1)[:self.capacity] if keys.size > self.capacity else slice(None)
        names = self._parts[0].scores if self._parts else {}
        return CaseSample(keys[keep], np.concatenate([p.errors for p in self._parts])[keep],
                          {n: np.concatenate([p.scores[n] for p in self._parts])[keep] for n in names}, 0)

    def detection(self, name: str) -> Detection:
        """Pooled AUROC / AUPRC of score ``name``; ``voxels`` counts the pooled (sampled) voxels."""
        if not self._parts:
            return Detection(math.nan, math.nan, 0, 0, "no case")
        merged = self._merged()
        return error_detection(merged.scores[name], merged.errors)
