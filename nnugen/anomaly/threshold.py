"""Choosing the anomaly threshold on validation data, and the JSON record that keeps it next to the model.

Convention everywhere: a voxel is anomalous where ``map > threshold``.

Two rules (``AnomalySettings.threshold_rule``):

- ``best_dice``: the threshold that maximises the Dice of ``map > threshold`` over the pooled voxels of validation
  cases with lesions: the "best possible Dice" [Dice] of Baur et al. 2021 ("Autoencoders for unsupervised anomaly
  segmentation in brain MR images: a comparative study", MedIA), the Dice pDDPM / cDDPM (Behrendt et al. 2023)
  report. It needs labelled lesions and is optimistic when the same cases are also scored: score on other cases.
- ``fpr``: the (1 - target_fpr) quantile of the maps of healthy validation cases, so that a fraction target_fpr of
  healthy voxels lies above it: an operating point set on healthy data alone, needing no lesion label at all.

Both take lists of per-case numpy maps (any shape) and, optionally, masks of the voxels to count (e.g. the body).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from nnugen.typed_section import MalformedFileError, read_json_object

THRESHOLD_RULES = ("best_dice", "fpr")
RECORD_FIELDS = {"threshold": float, "rule": str, "value": float, "model": str, "created_with": str | None}
"""The fields of a saved ``ThresholdRecord`` and their JSON types (``read_json_object``)."""

JsonWriter = Callable[[Path, dict[str, Any]], None]
"""``writer(path, data)``: writes a JSON-serialisable dict to path (default: nnugen.atomic_files.atomic_write_json)."""


def _pooled(name: str, maps: Sequence[np.ndarray], masks: Sequence[np.ndarray] | None,
            others: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Flat float64 values of all cases (inside the masks), and the matching flat values of ``others``."""
    if len(maps) == 0:
        raise ValueError(f"{name}: need at least one case map")
    for extra, label in ((others, "labels"), (masks, "masks")):
        if extra is not None and len(extra) != len(maps):
            raise ValueError(f"{name}: {len(maps)} maps but {len(extra)} {label}; pass one per case")
    values, matched = [], []
    for i, array in enumerate(maps):
        array = np.asarray(array)
        keep = np.ones(array.shape, bool) if masks is None else np.asarray(masks[i]).astype(bool)
        for extra in (others, masks):
            if extra is not None and np.shape(extra[i]) != array.shape:
                raise ValueError(f"{name}: case {i} has a map of shape {array.shape} but a label / mask of shape "
                                 f"{np.shape(extra[i])}; they must match voxel for voxel")
        values.append(array[keep].astype(np.float64))
        if others is not None:
            matched.append(np.asarray(others[i])[keep] > 0)
    pooled = np.concatenate(values)
    if pooled.size == 0 or not np.isfinite(pooled).all():
        raise ValueError(f"{name}: the maps hold no voxel (inside the masks) or non-finite values; check them")
    return pooled, (np.concatenate(matched) if others is not None else None)


def best_dice_threshold(
    maps: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    candidates: int | Sequence[float] | np.ndarray | None = 1000,
    masks: Sequence[np.ndarray] | None = None,
) -> tuple[float, float]:
    """(threshold, Dice) maximising the pooled Dice of ``map > threshold`` against ``labels > 0``.

    Args:
        maps: per-case anomaly maps of validation cases with lesions (cases without lesions may be included: they
            only add false positives).
        labels: per-case lesion masks, same shapes.
        candidates: thresholds to try: an integer n = n values evenly spaced from the smallest pooled map value
            (inclusive) to the largest (exclusive); an explicit list; None = every distinct map value (exact,
            O(N log N)). Ties go to the lowest threshold.
        masks: optional per-case masks of the voxels that count.
    """
    values, lesion = _pooled("best_dice_threshold", maps, masks, labels)
    assert lesion is not None
    total_lesion = int(lesion.sum())
    if total_lesion == 0:
        raise ValueError("best_dice_threshold: the labels hold no lesion voxel; the best-Dice rule needs validation "
                         "cases with lesions (or use threshold_rule 'fpr' with healthy cases)")
    low, high = float(values.min()), float(values.max())
    if candidates is None:
        # every distinct value, plus one below the minimum so "everything is anomalous" is a candidate too
        grid = np.concatenate([[np.nextafter(low, -np.inf)], np.unique(values)])
    elif isinstance(candidates, (int, np.integer)) and not isinstance(candidates, bool):
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1 thresholds, a list of thresholds or None, got {candidates}")
        grid = np.linspace(low, high, int(candidates), endpoint=False) if high > low else np.array([low])
    else:
        grid = np.unique(np.asarray(candidates, dtype=np.float64))
        if grid.size == 0 or not np.isfinite(grid).all():
            raise ValueError("candidates must hold finite thresholds (or be an integer count, or None)")
    # Voxel v is above candidate k iff grid[k] < v: it counts for every k < searchsorted(grid, v, "left").
    above = np.searchsorted(grid, values, side="left")
    predicted = np.cumsum(np.bincount(above, minlength=grid.size + 1)[::-1])[::-1][1:]
    hits = np.cumsum(np.bincount(above[lesion], minlength=grid.size + 1)[::-1])[::-1][1:]
    dice = 2 * hits / (predicted + total_lesion)
    best = int(np.argmax(dice))
    return float(grid[best]), float(dice[best])


def fpr_threshold(
    healthy_maps: Sequence[np.ndarray], target_fpr: float, masks: Sequence[np.ndarray] | None = None
) -> float:
    """The threshold above which a fraction ``target_fpr`` of the pooled healthy voxels lies (at most that, with ties).

    healthy_maps: per-case maps of healthy validation cases; masks: optional voxels that count (e.g. the body, so
    that empty background does not dilute the rate). The (1 - target_fpr) quantile, taken at an observed value.
    """
    if isinstance(target_fpr, bool) or not isinstance(target_fpr, numbers.Real) or not 0 < target_fpr < 1:
        raise ValueError(f"target_fpr must lie in (0, 1) (e.g. 0.01 = 1% of healthy voxels flagged), got "
                         f"{target_fpr!r}")
    values, _ = _pooled("fpr_threshold", healthy_maps, masks)
    return float(np.quantile(values, 1 - target_fpr, method="higher"))


def choose_threshold(maps: Sequence[np.ndarray], labels: Sequence[np.ndarray], healthy_masks: Sequence[np.ndarray],
                     rule: str, target_fpr: float, model: str) -> ThresholdRecord:
    """The record of ``rule`` on validation cases: ``best_dice`` on the maps against the lesion ``labels``, or ``fpr``
    on the voxels of ``healthy_masks``; best_dice falls back to fpr when no case has a lesion (the record says
    which rule was used)."""
    if rule == "best_dice" and not any(np.asarray(label).any() for label in labels):
        rule = "fpr"
    if rule == "best_dice":
        threshold, value = best_dice_threshold(maps, labels)
    else:
        threshold, value = fpr_threshold(maps, target_fpr, masks=healthy_masks), target_fpr
    return ThresholdRecord(threshold=threshold, rule=rule, value=value, model=model)


def _default_created_with() -> str:
    from nnugen import __version__

    return f"nnugen {__version__}"


@dataclass(frozen=True)
class ThresholdRecord:
    """A chosen threshold and where it came from, saved as JSON next to the model.

    threshold: anomalous where map > threshold. rule: "best_dice" or "fpr". value: the validation Dice reached
    (best_dice) or the target false-positive rate (fpr). model: an identifier of the model the maps came from (e.g.
    the checkpoint's name and fold); a record is only valid for that model. created_with: software version.
    """

    threshold: float
    rule: str
    value: float
    model: str
    created_with: str = ""

    def __post_init__(self) -> None:
        if self.rule not in THRESHOLD_RULES:
            raise ValueError(f"rule must be one of {THRESHOLD_RULES}, got {self.rule!r}")
        for name in ("threshold", "value"):
            number = getattr(self, name)
            if isinstance(number, bool) or not isinstance(number, numbers.Real) or not math.isfinite(number):
                raise ValueError(f"ThresholdRecord.{name} must be a finite number, got {number!r}")
            object.__setattr__(self, name, float(number))
        if not isinstance(self.model, str) or not self.model:
            raise ValueError("ThresholdRecord.model must name the model the threshold was chosen for (non-empty)")
        if not self.created_with:
            object.__setattr__(self, "created_with", _default_created_with())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ThresholdRecord:
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not {"threshold", "rule", "value", "model"} <= set(data):
            raise ValueError(f"a threshold record needs the keys threshold, rule, value, model; got {data!r}")
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)} in a threshold record; valid keys: "
                             f"{', '.join(sorted(names))}")
        return cls(**data)

    def save(self, path: str | os.PathLike, writer: JsonWriter | None = None) -> None:
        """Write the record as JSON; ``writer(path, data)`` defaults to an atomic write (nnugen.atomic_files)."""
        if writer is None:
            from nnugen.atomic_files import atomic_write_json as writer
        writer(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike, model: str) -> ThresholdRecord:
        """Read a record and check it belongs to ``model``; ValueError if it was chosen for another model."""
        fix = "choose the threshold again on this model's validation cases"
        data = read_json_object(Path(path), RECORD_FIELDS, fix)
        try:
            record = cls.from_dict(data)
        except ValueError as error:  # a rule that is not one of THRESHOLD_RULES, an empty model
            raise MalformedFileError(f"{path}: {error}; {fix}") from None
        if record.model != model:
            raise ValueError(f"threshold file from another model: {path} was chosen for {record.model!r}, not "
                             f"{model!r}; choose the threshold again on this model's validation cases")
        return record
