"""Pixel AUPRC (pooled, per volume), Dice at a threshold, image-level AUROC; checked against scikit-learn and
nnU-Net's Dice (compute_tp_fp_fn_tn, NaN when both are empty)."""

import numpy as np
import pytest

from nnugen.anomaly import (
    average_precision,
    dice,
    dice_at_threshold,
    image_auroc,
    per_volume_auprc,
    per_volume_dice,
    pixel_auprc,
    volume_score,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


@pytest.mark.parametrize("seed", range(3))
def test_average_precision_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(5000) < 0.1
    scores = np.round(rng.normal(size=5000) + labels, 1)  # rounded: many ties
    assert average_precision(scores, labels) == pytest.approx(
        sklearn_metrics.average_precision_score(labels, scores), abs=1e-12)


def test_pooled_and_per_volume_auprc():
    rng = np.random.default_rng(0)
    labels = [rng.random((6, 8, 8)) < p for p in (0.05, 0.2)] + [np.zeros((6, 8, 8), bool)]
    maps = [rng.random(label.shape) + label for label in labels]
    assert pixel_auprc(maps, labels) == 1.0
    per_volume = per_volume_auprc(maps, labels)
    assert per_volume[:2] == [1.0, 1.0] and np.isnan(per_volume[2])
    flat = [np.zeros(label.shape) for label in labels]  # an all-zero map scores the prevalence
    prevalence = sum(label.sum() for label in labels) / sum(label.size for label in labels)
    assert pixel_auprc(flat, labels) == pytest.approx(prevalence, rel=1e-12)
    with pytest.raises(ValueError, match="without lesion voxels"):
        pixel_auprc(maps[2:], labels[2:])


def _nnunet_dice(prediction, label):
    """nnU-Net's Dice of compute_metrics: from its compute_tp_fp_fn_tn, NaN when TP + FP + FN = 0."""
    from nnunetv2.evaluation.evaluate_predictions import compute_tp_fp_fn_tn

    tp, fp, fn, _ = compute_tp_fp_fn_tn(np.asarray(label) > 0, np.asarray(prediction) > 0)
    return float("nan") if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


@pytest.mark.parametrize("seed", range(4))
def test_dice_is_nnunets_on_random_arrays(seed):
    rng = np.random.default_rng(seed)
    shape = (5, 7, 9) if seed % 2 else (11, 13)
    prediction, label = rng.random(shape) < 0.3, rng.random(shape) < 0.2 * seed  # seed 0: an empty label
    assert dice(prediction, label) == _nnunet_dice(prediction, label)
    empty = np.zeros(shape, bool)
    assert np.isnan(dice(empty, empty)) and np.isnan(_nnunet_dice(empty, empty))
    maps = [rng.random(shape) for _ in range(3)]
    labels = [rng.random(shape) < 0.1, empty, rng.random(shape) < 0.3]
    per_volume = per_volume_dice(maps, labels, 0.8)
    assert per_volume == [_nnunet_dice(m > 0.8, lab) for m, lab in zip(maps, labels)]
    pooled = _nnunet_dice(np.concatenate([(m > 0.8).ravel() for m in maps]), np.concatenate([lab.ravel()
                                                                                               for lab in labels]))
    assert dice_at_threshold(maps, labels, 0.8) == pooled


def test_dice_variants():
    label = np.zeros((4, 4), bool)
    label[:2, :2] = True
    assert dice(label, label) == 1.0 and np.isnan(dice(np.zeros_like(label), np.zeros_like(label)))
    assert dice(~label, label) == 0.0
    anomaly_map = np.where(label, 2.0, 0.0)
    anomaly_map[3, 3] = 1.0
    assert dice_at_threshold([anomaly_map], [label], 1.5) == 1.0
    assert dice_at_threshold([anomaly_map], [label], 0.5) == pytest.approx(2 * 4 / 9)
    healthy = per_volume_dice([anomaly_map, np.zeros((4, 4))], [label, np.zeros((4, 4))], 0.5)
    assert healthy[0] == pytest.approx(8 / 9) and np.isnan(healthy[1])  # nothing flagged on a healthy case: NaN
    assert np.isnan(dice_at_threshold([np.zeros((4, 4))], [np.zeros((4, 4))], 0.5))


def test_image_auroc_matches_sklearn_and_volume_score():
    rng = np.random.default_rng(1)
    abnormal = np.array([True] * 8 + [False] * 12)
    scores = np.round(rng.normal(size=20) + abnormal, 1)
    assert image_auroc(scores, abnormal) == pytest.approx(sklearn_metrics.roc_auc_score(abnormal, scores))
    assert image_auroc([3, 4, 1, 2], [True, True, False, False]) == 1.0
    with pytest.raises(ValueError, match="both"):
        image_auroc([1, 2], [True, True])
    anomaly_map = np.arange(100.0).reshape(10, 10)
    assert volume_score(anomaly_map, 99) == pytest.approx(98.01)
    assert volume_score(anomaly_map, 100, mask=anomaly_map < 50) == 49.0
