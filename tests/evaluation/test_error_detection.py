"""The uncertainty metrics on small arrays: AUROC / AUPRC against scikit-learn and hand-counted values, the ECE
against a hand computation of Guo et al.'s formula, entropy against closed forms, and the pooled sample against plain
concatenation (exact below its capacity, a seeded uniform sample above it)."""

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from nnugen.evaluation.error_detection import (
    NUM_BINS,
    PooledSample,
    calibration_bins,
    case_sample,
    error_detection,
    error_mask,
    evaluated_voxels,
    expected_calibration_error,
    predictive_entropy,
)


def _random_case(seed: int, shape=(6, 5, 4), classes: int = 3):
    rng = np.random.default_rng(seed)
    reference = rng.integers(0, classes, shape)
    prediction = np.where(rng.random(shape) < 0.3, rng.integers(0, classes, shape), reference)
    scores = rng.random(shape).astype(np.float32) + 0.5 * (prediction != reference)
    return prediction, reference, scores


def test_error_detection_matches_scikit_learn_on_random_cases_with_ties():
    for seed in range(5):
        prediction, reference, scores = _random_case(seed)
        scores = np.round(scores, 1)  # many ties: both metrics must group them as scikit-learn does
        errors = error_mask(prediction, reference)
        found = error_detection(scores, errors)
        assert found.auroc == roc_auc_score(errors.ravel(), scores.ravel())
        assert found.auprc == average_precision_score(errors.ravel(), scores.ravel())
        assert (found.voxels, found.errors, found.reason) == (errors.size, int(errors.sum()), None)


def test_error_detection_hand_counted_values():
    errors = np.array([True, False, True, False])
    scores = np.array([0.9, 0.8, 0.3, 0.1])
    # pairs (error, correct) ranked right: (0.9>0.8), (0.9>0.1), (0.3>0.1); wrong: (0.3<0.8) -> AUROC 3/4
    # precision at each error: 1/1 at 0.9, 2/3 at 0.3 -> AP = (1 + 2/3) / 2
    found = error_detection(scores, errors)
    assert found.auroc == 0.75
    assert found.auprc == pytest.approx((1 + 2 / 3) / 2, abs=1e-15)
    perfect = error_detection(np.array([0.1, 0.2, 0.7, 0.9]), np.array([False, False, True, True]))
    assert (perfect.auroc, perfect.auprc) == (1.0, 1.0)


@pytest.mark.parametrize("errors, reason", [([False, False, False], "no wrongly labelled voxel"),
                                            ([True, True, True], "every voxel is wrongly labelled"),
                                            ([], "no evaluated voxel")])
def test_error_detection_is_nan_with_the_reason_when_undefined(errors, reason):
    errors = np.array(errors, dtype=bool)
    found = error_detection(np.linspace(0, 1, errors.size), errors)
    assert math.isnan(found.auroc) and math.isnan(found.auprc) and found.reason == reason
    assert found.as_json() == {"auroc": None, "auprc": None, "voxels": errors.size, "errors": int(errors.sum()),
                               "reason": reason}


def test_ignore_label_and_region_leave_voxels_out():
    reference = np.array([[0, 1, 2], [2, 1, 0]])
    assert evaluated_voxels(reference).all()
    np.testing.assert_array_equal(evaluated_voxels(reference, ignore_label=2), [[1, 1, 0], [0, 1, 1]])
    region = np.array([[1, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(evaluated_voxels(reference, 2, region), [[1, 1, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match="region shape"):
        evaluated_voxels(reference, region=np.ones((3, 2)))
    with pytest.raises(ValueError, match="prediction shape"):
        error_mask(np.zeros((2, 2)), reference)


def test_predictive_entropy_closed_forms():
    probabilities = np.array([[1.0, 0.5, 1 / 3], [0.0, 0.5, 1 / 3], [0.0, 0.0, 1 / 3]])  # (C=3, 3 voxels)
    np.testing.assert_allclose(predictive_entropy(probabilities), [0.0, math.log(2), math.log(3)], rtol=1e-6)
    assert predictive_entropy(probabilities).dtype == np.float32


def _ece_by_hand(confidence, correct, bins=NUM_BINS):
    """Guo et al. 2017 eq. 3 written out: bins ((m-1)/M, m/M], sum_m |B_m|/n |acc(B_m) - conf(B_m)|."""
    total = 0.0
    for m in range(1, bins + 1):
        inside = [(c, k) for c, k in zip(confidence, correct) if (m - 1) / bins < c <= m / bins]
        if inside:
            accuracy = sum(k for _, k in inside) / len(inside)
            mean_confidence = sum(c for c, _ in inside) / len(inside)
            total += len(inside) / len(confidence) * abs(accuracy - mean_confidence)
    return total


def test_ece_of_a_small_example_by_hand():
    # 4 voxels, 2 classes; top-label confidences 0.9, 0.9, 0.6, 0.55; correct, wrong, correct, correct
    probabilities = np.array([[0.9, 0.1, 0.6, 0.45], [0.1, 0.9, 0.4, 0.55]])
    reference = np.array([0, 0, 0, 1])
    # bin (12/15, 14/15] holds 0.9, 0.9: acc 1/2, conf 0.9; bin (8/15, 9/15] holds 0.6 and 0.55: acc 1, conf 0.575
    expected = 2 / 4 * abs(0.5 - 0.9) + 2 / 4 * abs(1.0 - 0.575)
    assert expected == pytest.approx(0.4125)
    assert expected_calibration_error(probabilities, reference) == pytest.approx(expected, abs=1e-15)
    assert _ece_by_hand([0.9, 0.9, 0.6, 0.55], [1, 0, 1, 1]) == pytest.approx(expected, abs=1e-15)


def test_ece_matches_the_hand_formula_on_random_cases_and_pools_exactly():
    rng = np.random.default_rng(3)
    cases = []
    for _ in range(3):
        logits = rng.normal(size=(4, 7, 6)) * 2
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=0)
        reference = rng.integers(0, 4, (7, 6))
        evaluated = rng.random((7, 6)) < 0.8
        cases.append((probabilities, reference, evaluated))
        confidence = probabilities.max(axis=0)[evaluated]
        correct = (probabilities.argmax(axis=0) == reference)[evaluated]
        assert expected_calibration_error(probabilities, reference, evaluated) == pytest.approx(
            _ece_by_hand(confidence, correct), abs=1e-12)
    pooled = calibration_bins(*cases[0]) + calibration_bins(*cases[1]) + calibration_bins(*cases[2])
    confidence = np.concatenate([p.max(axis=0)[e] for p, _, e in cases])
    correct = np.concatenate([(p.argmax(axis=0) == r)[e] for p, r, e in cases])
    assert pooled.expected_calibration_error() == pytest.approx(_ece_by_hand(confidence, correct), abs=1e-12)


def test_ece_bin_edges_are_closed_on_the_right():
    # a confidence of exactly 1/3 = 5/15 lies in bin (4/15, 5/15], the 5th; 1.0 in the last
    probabilities = np.array([[1 / 3, 1.0], [1 / 3, 0.0], [1 / 3, 0.0]])
    bins = calibration_bins(probabilities, np.array([0, 0]))
    assert bins.count.tolist() == [0, 0, 0, 0, 1] + [0] * 9 + [1]
    assert math.isnan(expected_calibration_error(probabilities, np.array([0, 0]), np.zeros(2, dtype=bool)))


def _pooled(cases, capacity, seed=0):
    pool = PooledSample(capacity)
    for index, (errors, scores) in reversed(list(enumerate(cases))):  # arrival order must not matter
        pool.add(case_sample(index, errors, {"entropy": scores}, capacity, seed))
    return pool


def test_pooled_detection_is_the_concatenation_below_capacity():
    cases = []
    for seed in range(4):
        prediction, reference, scores = _random_case(seed)
        cases.append((error_mask(prediction, reference).ravel(), scores.ravel()))
    errors = np.concatenate([e for e, _ in cases])
    scores = np.concatenate([s for _, s in cases])
    pool = _pooled(cases, capacity=errors.size)
    found = pool.detection("entropy")
    assert not pool.subsampled and found.voxels == errors.size
    assert found.auroc == roc_auc_score(errors, scores)
    assert found.auprc == average_precision_score(errors, scores)


def test_pooled_detection_above_capacity_is_a_seeded_uniform_sample():
    cases = []
    for seed in range(4):
        prediction, reference, scores = _random_case(seed, shape=(20, 20, 10))
        cases.append((error_mask(prediction, reference).ravel(), scores.ravel()))
    capacity = 1500
    first, again = _pooled(cases, capacity), _pooled(cases, capacity)
    assert first.subsampled and first.voxels == 16000
    found = first.detection("entropy")
    assert found.voxels == capacity and found == again.detection("entropy")
    # the sample is the capacity smallest keys of the concatenation, whatever the order cases arrive in
    keys = np.concatenate([np.random.default_rng([0, k]).random(e.size) for k, (e, _) in enumerate(cases)])
    keep = np.sort(np.argsort(keys)[:capacity])
    errors = np.concatenate([e for e, _ in cases])[keep]
    scores = np.concatenate([s for _, s in cases])[keep]
    assert found.auroc == roc_auc_score(errors, scores)
    assert found.auprc == average_precision_score(errors, scores)
    assert _pooled(cases, capacity, seed=1).detection("entropy") != found
