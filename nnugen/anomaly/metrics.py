"""Anomaly segmentation metrics on numpy maps: pixel AUPRC, Dice at a threshold, image-level AUROC.

The metrics of the healthy-only anomaly segmentation literature (Baur et al. 2021; pDDPM / cDDPM, Behrendt et al.
2023; Bercea et al. 2024): the area under the precision-recall curve of the voxel scores (AUPRC, as average
precision: scikit-learn's ``average_precision_score``, the step-wise sum), the Dice of the map thresholded at a chosen
threshold (anomalous where map > threshold), and the area under the ROC curve of one score per volume for telling
abnormal scans from healthy ones (scikit-learn's ``roc_auc_score``).

Dice is nnU-Net's (``nnunetv2.evaluation.evaluate_predictions.compute_metrics``), written here without importing
nnU-Net (anomaly/ is math code): ``2 TP / (2 TP + FP + FN)``, and NaN when prediction and label are both empty
(TP + FP + FN = 0), which means over cases leave out (docs/evaluation.md). A healthy case with nothing flagged is
therefore NaN, not 1.

Maps, labels and masks are lists of per-case arrays of any shape; labels count as lesion where > 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision sum_k (R_k - R_{k-1}) P_k over the distinct score thresholds (highest first): scikit-learn's
    ``average_precision_score``. An all-equal map gives the prevalence. ValueError without positives."""
    from sklearn.metrics import average_precision_score

    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(labels).ravel() > 0
    if scores.shape != positive.shape:
        raise ValueError(f"scores ({scores.size}) and labels ({positive.size}) must have one value per voxel")
    if not positive.any():
        raise ValueError("average precision is undefined without lesion voxels; score cases with lesions only")
    return float(average_precision_score(positive, scores))


def _select(maps: Sequence[np.ndarray], others: Sequence[np.ndarray], masks: Sequence[np.ndarray] | None,
            name: str) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(maps) == 0 or len(maps) != len(others) or (masks is not None and len(masks) != len(maps)):
        raise ValueError(f"{name}: need one label (and one mask, if given) per map, and at least one map; got "
                         f"{len(maps)} maps, {len(others)} labels" + (f", {len(masks)} masks" if masks else ""))
    pairs = []
    for i, (array, label) in enumerate(zip(maps, others)):
        array, label = np.asarray(array), np.asarray(label)
        if array.shape != label.shape:
            raise ValueError(f"{name}: case {i} map {array.shape} and label {label.shape} must have one shape")
        keep = np.ones(array.shape, bool) if masks is None else np.asarray(masks[i]).astype(bool)
        pairs.append((array[keep], label[keep] > 0))
    return pairs


def pixel_auprc(maps: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                masks: Sequence[np.ndarray] | None = None) -> float:
    """Average precision over the pooled voxels of all cases (inside the masks, if given)."""
    pairs = _select(maps, labels, masks, "pixel_auprc")
    return average_precision(np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs]))


def per_volume_auprc(maps: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                     masks: Sequence[np.ndarray] | None = None) -> list[float]:
    """Average precision per case; NaN for a case without lesion voxels (undefined there)."""
    return [average_precision(v, lab) if lab.any() else float("nan")
            for v, lab in _select(maps, labels, masks, "per_volume_auprc")]


def dice(prediction: np.ndarray, label: np.ndarray) -> float:
    """nnU-Net's Dice 2 TP / (2 TP + FP + FN) of two binary arrays (> 0 is foreground); NaN when both are empty."""
    prediction, label = np.asarray(prediction) > 0, np.asarray(label) > 0
    if prediction.shape != label.shape:
        raise ValueError(f"prediction {prediction.shape} and label {label.shape} must have one shape")
    tp = int(np.count_nonzero(prediction & label))
    fp, fn = int(np.count_nonzero(prediction & ~label)), int(np.count_nonzero(~prediction & label))
    return float("nan") if tp + fp + fn == 0 else 2.0 * tp / (2 * tp + fp + fn)


def dice_at_threshold(maps: Sequence[np.ndarray], labels: Sequence[np.ndarray], threshold: float,
                      masks: Sequence[np.ndarray] | None = None) -> float:
    """Pooled Dice of ``map > threshold`` over all cases (one Dice of all voxels, as the best-Dice rule uses); NaN
    when no case has a lesion and nothing is flagged."""
    pairs = _select(maps, labels, masks, "dice_at_threshold")
    return dice(np.concatenate([p[0] > threshold for p in pairs]), np.concatenate([p[1] for p in pairs]))


def per_volume_dice(maps: Sequence[np.ndarray], labels: Sequence[np.ndarray], threshold: float,
                    masks: Sequence[np.ndarray] | None = None) -> list[float]:
    """Dice of ``map > threshold`` per case (NaN for a healthy case with nothing flagged, as nnU-Net)."""
    return [dice(v > threshold, lab) for v, lab in _select(maps, labels, masks, "per_volume_dice")]


def volume_score(anomaly_map: np.ndarray, percentile: float = 99.0, mask: np.ndarray | None = None) -> float:
    """One anomaly score per volume: the given percentile of its map (inside the mask); robust to single voxels."""
    if not 0 <= percentile <= 100:
        raise ValueError(f"percentile must lie in [0, 100], got {percentile}")
    values = np.asarray(anomaly_map) if mask is None else np.asarray(anomaly_map)[np.asarray(mask).astype(bool)]
    if values.size == 0:
        raise ValueError("volume_score: no voxel to score (empty map or mask)")
    return float(np.percentile(values, percentile))


def image_auroc(scores: Sequence[float] | np.ndarray, is_abnormal: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve of per-volume scores, scikit-learn's ``roc_auc_score``: P(score of an abnormal >
    score of a healthy), ties count 1/2."""
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(scores, dtype=np.float64).ravel()
    abnormal = np.asarray(is_abnormal).astype(bool).ravel()
    if scores.shape != abnormal.shape:
        raise ValueError(f"need one is_abnormal flag per score, got {scores.size} scores and {abnormal.size} flags")
    if abnormal.all() or not abnormal.any():
        raise ValueError("image_auroc needs both abnormal and healthy volumes")
    return float(roc_auc_score(abnormal, scores))
