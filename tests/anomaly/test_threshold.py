"""Threshold rules (best Dice on lesion cases, target FPR on healthy cases) and the saved ThresholdRecord."""

import json

import numpy as np
import pytest

from nnugen.anomaly import ThresholdRecord, best_dice_threshold, dice_at_threshold, fpr_threshold


def _cases(seed: int, n: int = 3, shape=(12, 16, 16)):
    rng = np.random.default_rng(seed)
    labels = [rng.random(shape) < 0.05 for _ in range(n)]
    maps = [rng.normal(0, 1, shape) + 1.5 * label for label in labels]
    return maps, labels


def test_separable_maps_give_dice_one():
    labels = [np.zeros((8, 8), bool), np.zeros((8, 8), bool)]
    labels[0][2:4, 2:4] = True
    labels[1][5, 5] = True
    maps = [np.where(label, 0.9, 0.1) for label in labels]
    for candidates in (1000, None, [0.05, 0.5, 0.95]):
        threshold, dice = best_dice_threshold(maps, labels, candidates)
        assert dice == 1.0 and 0.1 <= threshold < 0.9


@pytest.mark.parametrize("candidates", [50, None, np.linspace(-2, 4, 37)])
def test_best_dice_is_the_maximum_over_the_candidates(candidates):
    maps, labels = _cases(0)
    threshold, dice = best_dice_threshold(maps, labels, candidates)
    assert dice == pytest.approx(dice_at_threshold(maps, labels, threshold), abs=1e-12)
    pooled = np.concatenate([m.ravel() for m in maps])
    grid = np.unique(pooled) if candidates is None else (
        np.linspace(pooled.min(), pooled.max(), candidates, endpoint=False) if isinstance(candidates, int)
        else candidates)
    if candidates is None:
        grid = grid[::97]  # brute force on a subset of the exact candidates
    brute = max(dice_at_threshold(maps, labels, t) for t in grid)
    assert dice >= brute - 1e-12


def test_exact_candidates_beat_or_match_a_grid():
    maps, labels = _cases(1)
    assert best_dice_threshold(maps, labels, None)[1] >= best_dice_threshold(maps, labels, 20)[1]


def test_masks_restrict_the_voxels():
    maps, labels = _cases(2)
    masks = [np.zeros(m.shape, bool) for m in maps]
    for mask, label in zip(masks, labels):
        mask[label] = True  # only lesion voxels count: any threshold below them is perfect
    assert best_dice_threshold(maps, labels, None, masks=masks)[1] == 1.0


def test_best_dice_needs_lesions_and_matching_inputs():
    maps, labels = _cases(3)
    with pytest.raises(ValueError, match="no lesion voxel"):
        best_dice_threshold(maps, [np.zeros_like(label) for label in labels])
    with pytest.raises(ValueError, match="one per case"):
        best_dice_threshold(maps, labels[:2])
    with pytest.raises(ValueError, match="voxel for voxel"):
        best_dice_threshold(maps, [label[:, :4] for label in labels])
    with pytest.raises(ValueError, match="at least one"):
        best_dice_threshold([], [])
    with pytest.raises(ValueError, match="candidates"):
        best_dice_threshold(maps, labels, 0)


@pytest.mark.parametrize("target_fpr", [0.001, 0.01, 0.05, 0.2])
def test_fpr_threshold_gives_the_target_rate(target_fpr):
    rng = np.random.default_rng(4)
    healthy = [rng.gamma(2.0, 1.0, (16, 32, 32)) for _ in range(4)]  # skewed, like residuals
    threshold = fpr_threshold(healthy, target_fpr)
    pooled = np.concatenate([m.ravel() for m in healthy])
    assert np.mean(pooled > threshold) <= target_fpr
    assert np.mean(pooled > threshold) == pytest.approx(target_fpr, abs=2 / pooled.size)
    unseen = rng.gamma(2.0, 1.0, 200_000)  # new healthy maps from the same law: the rate generalises
    assert np.mean(unseen > threshold) == pytest.approx(target_fpr, rel=0.25, abs=3e-4)


def test_fpr_threshold_with_masks_and_bad_targets():
    rng = np.random.default_rng(5)
    healthy = [rng.random((10, 10)) for _ in range(2)]
    masks = [np.zeros((10, 10), bool) for _ in range(2)]
    for mask in masks:
        mask[:, :5] = True
    threshold = fpr_threshold(healthy, 0.1, masks=masks)
    inside = np.concatenate([m[k] for m, k in zip(healthy, masks)])
    assert np.mean(inside > threshold) == pytest.approx(0.1, abs=0.011)
    for bad in (0.0, 1.0, -0.1, True):
        with pytest.raises(ValueError, match="target_fpr"):
            fpr_threshold(healthy, bad)


def test_threshold_record_round_trip(tmp_path):
    record = ThresholdRecord(0.25, "best_dice", 0.71, model="Dataset510_Lesions/NnugenAnomalyTrainer/fold_0")
    assert record.created_with.startswith("nnugen ")
    path = tmp_path / "anomaly_threshold.json"
    record.save(path)
    assert json.loads(path.read_text()) == {"threshold": 0.25, "rule": "best_dice", "value": 0.71,
                                            "model": record.model, "created_with": record.created_with}
    assert ThresholdRecord.load(path, record.model) == record
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # atomic write left no temporary file

    written = {}
    ThresholdRecord(1.5, "fpr", 0.01, "m").save(tmp_path / "other.json", writer=lambda p, d: written.update({p: d}))
    assert written == {tmp_path / "other.json": {"threshold": 1.5, "rule": "fpr", "value": 0.01, "model": "m",
                                                 "created_with": written[tmp_path / "other.json"]["created_with"]}}


def test_threshold_record_from_another_model_or_broken_file(tmp_path):
    path = tmp_path / "t.json"
    ThresholdRecord(0.25, "fpr", 0.01, model="fold_0").save(path)
    with pytest.raises(ValueError, match="threshold file from another model"):
        ThresholdRecord.load(path, "fold_1")
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ThresholdRecord.load(path, "fold_0")
    path.write_text(json.dumps({"threshold": 1.0, "rule": "fpr", "value": 0.1, "model": "m", "extra": 1}))
    with pytest.raises(ValueError, match="unknown key"):
        ThresholdRecord.load(path, "m")
    for kwargs in (dict(rule="otsu"), dict(threshold=float("nan")), dict(model="")):
        with pytest.raises(ValueError):
            ThresholdRecord(**{"threshold": 1.0, "rule": "fpr", "value": 0.1, "model": "m", **kwargs})


def test_choose_threshold_uses_the_rule_and_falls_back_to_fpr_without_lesions():
    from nnugen.anomaly import choose_threshold

    rng = np.random.default_rng(0)
    maps = [rng.random((8, 8)) for _ in range(3)]
    labels = [m > 0.9 for m in maps]
    healthy = [np.ones((8, 8), bool)] * 3
    record = choose_threshold(maps, labels, healthy, "best_dice", 0.05, "model/fold_0")
    assert record.rule == "best_dice" and record.value == pytest.approx(1.0) and record.model == "model/fold_0"
    empty = [np.zeros((8, 8), bool)] * 3
    fallback = choose_threshold(maps, empty, healthy, "best_dice", 0.05, "model/fold_0")
    assert fallback.rule == "fpr" and fallback.value == 0.05
    assert np.mean(np.concatenate([m.ravel() for m in maps]) > fallback.threshold) <= 0.05
