"""The scores of a set of cases' anomaly maps against their lesion labels, as ``anomaly_summary.json``, the demo and
the benchmark report them: pixel AUPRC (pooled and per lesion volume), Dice at a threshold after the removal of small
components (as prediction does), and the image-level AUROC of each map's 99th percentile."""

from __future__ import annotations

import math

import numpy as np

from nnugen.anomaly.anomaly_map import remove_small_components
from nnugen.anomaly.metrics import dice, image_auroc, per_volume_auprc, pixel_auprc, volume_score


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def score_cases(maps: dict[str, np.ndarray], labels: dict[str, np.ndarray], threshold: float,
                min_component_voxels: int = 0) -> dict:
    """Scores of ``maps`` ({case: map}) against ``labels`` ({case: lesion mask}, same shapes), anomalous where
    map > threshold. Keys: lesion_cases, healthy_cases, pixel_auprc, pixel_auprc_per_volume_mean,
    dice_at_threshold (pooled), dice_per_volume_mean (lesion cases), image_auroc (None unless both kinds of case
    are present; the other pixel scores are None without a lesion case) and ``cases`` (per case; a case's Dice is
    nnU-Net's, None (NaN) for a healthy case with nothing flagged)."""
    keys = list(maps)
    if sorted(keys) != sorted(labels):
        raise ValueError(f"maps and labels must cover the same cases; got {sorted(keys)} and {sorted(labels)}")
    map_list, label_list = [maps[k] for k in keys], [np.asarray(labels[k]) > 0 for k in keys]
    lesion = [k for k, label in zip(keys, label_list) if label.any()]
    binaries = [remove_small_components(m[None, None] > threshold, min_component_voxels)[0, 0] for m in map_list]
    scores = [volume_score(m) for m in map_list]
    per_auprc = per_volume_auprc(map_list, label_list)
    per_case = {k: {"lesion_voxels": int(lab.sum()), "flagged_voxels": int(b.sum()), "dice": _number(dice(b, lab)),
                    "auprc": _number(a), "volume_score": s}
                for k, lab, b, a, s in zip(keys, label_list, binaries, per_auprc, scores)}
    both = 0 < len(lesion) < len(keys)
    return {
        "lesion_cases": lesion, "healthy_cases": [k for k in keys if k not in lesion],
        "pixel_auprc": pixel_auprc(map_list, label_list) if lesion else None,
        "pixel_auprc_per_volume_mean": float(np.mean([per_case[k]["auprc"] for k in lesion])) if lesion else None,
        "dice_at_threshold": dice(np.concatenate([b.ravel() for b in binaries]),
                                  np.concatenate([lab.ravel() for lab in label_list])) if lesion else None,
        "dice_per_volume_mean": float(np.mean([per_case[k]["dice"] for k in lesion])) if lesion else None,
        "image_auroc": image_auroc(scores, [k in lesion for k in keys]) if both else None,
        "cases": per_case,
    }
