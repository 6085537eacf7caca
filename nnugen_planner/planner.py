"""``plan_dataset``: the Python API behind ``nnugen_plan``. Reads nnUNetPlans.json, dataset.json and the
fingerprint, writes nnugenPlans.json (same configurations, same data identifiers, plus an ``nnugen`` section each),
atomically and deterministically. The planner's own output is recorded too (``nnugen_planner_output``), so a
later run tells the user's edits in an existing nnugenPlans.json from planned values: the edits survive a re-plan
unless ``overwrite``; ``--set`` / ``--overrides`` apply on top (and, being edits, survive later runs too)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnugen import PLANS_IDENTIFIER
from nnugen.atomic_files import atomic_write_json
from nnugen.config import NnugenSection, configuration_name
from nnugen.folders.dataset_folders import InputError, load_json, preprocessed_folder
from nnugen.typed_section import MalformedFileError, deep_merge
from nnugen_planner.denoiser_plan import arch_kwargs_of
from nnugen_planner.image_statistics import ImageStatistics, image_statistics
from nnugen_planner.intensity_plan import intensity_from_plans, whole_image_zscore
from nnugen_planner.overrides import load_overrides_file, parse_set
from nnugen_planner.task_plan import plan_tasks

DEFAULT_BUDGET_GB = 8.0
PLANNED_KEY = "nnugen_planner_output"  # what the planner wrote last time: tells the user's edits from planned values


def user_edits(current: dict[str, Any], planned_before: dict[str, Any]) -> dict[str, Any]:
    """The leaves of ``current`` that differ from what the planner wrote last time (the user's edits)."""
    edits: dict[str, Any] = {}
    for key, value in current.items():
        before = planned_before.get(key) if isinstance(planned_before, dict) else None
        if isinstance(value, dict) and isinstance(before, dict):
            nested = user_edits(value, before)
            if nested:
                edits[key] = nested
        elif key not in planned_before or before != value:
            edits[key] = value
    return edits


@dataclass(frozen=True)
class PlanRequest:
    dataset: str
    configurations: tuple[str, ...] = ()
    gpu_memory_gb: float = DEFAULT_BUDGET_GB
    overwrite: bool = False
    sets: tuple[str, ...] = ()
    overrides_file: Path | None = None
    source_plans: str = "nnUNetPlans"
    raw_dataset: Path | None = None
    """The raw dataset: its training images give z-scored channels their intensity map (image_statistics.py)."""


def resolve_configuration_names(requested: tuple[str, ...], plans: dict[str, Any]) -> list[str]:
    available = [name for name, c in plans["configurations"].items() if "architecture" in c or "inherits_from" not in c]
    if not requested:
        return available
    names = [configuration_name(name) for name in requested]
    for name in names:
        if name not in available:
            raise InputError(f"unknown configuration '{name}'; this plan has {', '.join(available)}")
    return list(dict.fromkeys(names))


def num_segmentation_heads(dataset_json: dict[str, Any]) -> int:
    labels = dataset_json.get("labels", {})
    if "regions_class_order" in dataset_json:  # region-based training: one sigmoid output per region
        return sum(1 for name, value in labels.items() if name != "background")
    return len(labels)


def plan_dataset(request: PlanRequest) -> Path:
    """Write ``nnugenPlans.json`` and return its path. Raises InputError (nothing written) on bad input."""
    budget = request.gpu_memory_gb
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        raise InputError(f"--gpu-memory-gb {budget}: must be a positive, finite number of GB, e.g. 8 or 24")
    folder = preprocessed_folder(request.dataset)
    plans, dataset_json = _read_inputs(folder, request)
    names = resolve_configuration_names(request.configurations, plans)
    everywhere, per_configuration = _requested_changes(request, plans)
    target = folder / f"{PLANS_IDENTIFIER}.json"
    existing = None if request.overwrite or not target.is_file() else _checked_existing(load_json(target), target)
    result = _kept_from_before(plans, existing)
    planned_before = existing.get(PLANNED_KEY, {}) if existing is not None else {}
    planned_record = dict(planned_before)
    channel_names = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    n_classes = num_segmentation_heads(dataset_json)
    images = _image_statistics(request.raw_dataset, plans, names, dataset_json)
    for name in names:
        configuration = plans["configurations"][name]
        planned = _planned(plans, name, len(channel_names), n_classes, request.gpu_memory_gb, images)
        edits = {}
        if existing is not None:
            edits = user_edits(existing.get("configurations", {}).get(name, {}).get("nnugen", {}),
                               planned_before.get(name, {}))
        if edits:  # the hand edits alone are wrong: the file is malformed (exit code 2), whatever the flags say
            try:
                NnugenSection.from_dict(deep_merge(planned, edits), f"{name}.nnugen")
            except ValueError as error:
                raise MalformedFileError(f"{target}: {error}; fix it, or re-plan with --overwrite (drops your "
                                         "edits)") from None
        section = deep_merge(deep_merge(planned, edits), deep_merge(everywhere, per_configuration.get(name, {})))
        validated = _validated(section, name, configuration, channel_names)
        result["configurations"][name] = {**result["configurations"][name], "nnugen": validated}
        planned_record[name] = planned
    result[PLANNED_KEY] = planned_record
    atomic_write_json(target, result)
    return target


def _checked_existing(existing: dict[str, Any], target: Path) -> dict[str, Any]:
    """An existing nnugenPlans.json whose parts this run reads (configurations, their nnugen sections, the planner's
    record) are mappings; InputError naming the first that is not (a hand edit gone wrong)."""
    configurations = existing.get("configurations", {})
    planned = existing.get(PLANNED_KEY, {})
    parts = [("configurations", configurations), (PLANNED_KEY, planned)]
    if isinstance(configurations, dict):
        parts += [(f"configurations.{name}", c) for name, c in configurations.items()]
        parts += [(f"configurations.{name}.nnugen", c["nnugen"]) for name, c in configurations.items()
                  if isinstance(c, dict) and "nnugen" in c]
    if isinstance(planned, dict):
        parts += [(f"{PLANNED_KEY}.{name}", p) for name, p in planned.items()]
    for where, value in parts:
        if not isinstance(value, dict):
            raise MalformedFileError(f"{target}: {where}: expected a mapping, got {json.dumps(value)[:40]}; fix it, "
                                     "or re-plan with --overwrite (drops your edits)")
    return existing


def _read_inputs(folder: Path, request: PlanRequest) -> tuple[dict[str, Any], dict[str, Any]]:
    """nnU-Net's plans and dataset.json from the preprocessed ``folder``; the fingerprint must be readable too."""
    hint = f"run nnUNetv2_plan_and_preprocess -d {request.dataset} first"
    plans = load_json(folder / f"{request.source_plans}.json", hint)
    dataset_json = load_json(folder / "dataset.json", hint)
    load_json(folder / "dataset_fingerprint.json", hint)  # present and readable; the plans carry what we use
    if "configurations" not in plans:
        raise InputError(f"{folder / (request.source_plans + '.json')} has no 'configurations'; regenerate it")
    return plans, dataset_json


def _requested_changes(request: PlanRequest, plans: dict[str, Any]) -> tuple[dict[str, Any], dict[str, dict]]:
    """The changes requested on top of the plan: for every configuration (``--set`` over the overrides file's own),
    and per configuration by full name (the overrides file's ``configurations``)."""
    everywhere: dict[str, Any] = {}
    per_configuration: dict[str, dict[str, Any]] = {}
    if request.overrides_file is not None:
        everywhere, per_configuration = load_overrides_file(Path(request.overrides_file))
        by_name: dict[str, dict[str, Any]] = {}  # "3d" and "3d_fullres" may both be given: merge, drop neither
        for key, value in per_configuration.items():
            name = configuration_name(key)
            by_name[name] = deep_merge(by_name.get(name, {}), value)
        per_configuration = by_name
        for name in per_configuration:
            if name not in plans["configurations"]:
                raise InputError(f"--overrides: unknown configuration '{name}' under 'configurations'")
    for assignment in request.sets:
        everywhere = deep_merge(everywhere, parse_set(assignment))
    return everywhere, per_configuration


def _kept_from_before(plans: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
    """nnugenPlans.json before this run's sections: nnU-Net's part always comes from nnUNetPlans.json (re-planned
    nnU-Net -> re-planned nnugen); configurations only the user added to an ``existing`` nnugenPlans.json, and the
    nnugen sections planned earlier (for the configurations this run does not plan), are kept."""
    old_configurations = existing.get("configurations", {}) if existing is not None else {}
    result = {**dict(plans), "plans_name": PLANS_IDENTIFIER}
    result["configurations"] = {**old_configurations, **plans["configurations"]}
    for name, old in old_configurations.items():
        if name in plans["configurations"] and "nnugen" in old:
            result["configurations"][name] = {**plans["configurations"][name], "nnugen": old["nnugen"]}
    return result


def _image_statistics(raw_dataset: Path | None, plans: dict[str, Any], names: list[str],
                      dataset_json: dict[str, Any]) -> list[ImageStatistics] | None:
    """The raw training images' statistics where some planned configuration z-scores a channel over the whole image
    (intensity_plan.py); None without a raw dataset or such a channel."""
    if raw_dataset is None or not any(any(whole_image_zscore(plans["configurations"][name])) for name in names):
        return None
    return image_statistics(raw_dataset, dataset_json, plans.get("image_reader_writer", "SimpleITKIO"))


def _planned(plans: dict[str, Any], name: str, n_channels: int, n_classes: int, gpu_memory_gb: float,
             images: list[ImageStatistics] | None = None) -> dict:
    """The ``nnugen`` section the planner gives configuration ``name`` (before edits and overrides), as written."""
    configuration = plans["configurations"][name]
    tasks, unfit = plan_tasks(arch_kwargs_of(configuration, name), configuration["patch_size"],
                              int(configuration["batch_size"]), n_channels, n_classes, gpu_memory_gb, name)
    return NnugenSection(intensity=intensity_from_plans(plans, configuration, images), tasks=tasks,
                         unfit=unfit).to_dict()


def _validated(section: dict[str, Any], name: str, configuration: dict[str, Any], channel_names: dict) -> dict:
    """``section`` read back through nnugen.config (ValueError names the bad key), as written."""
    validated = NnugenSection.from_dict(section, f"{name}.nnugen")
    if "anomaly" in validated.tasks:  # the anatomy channel must be one of the dataset's, and not its only one
        validated.tasks["anomaly"].anomaly.condition_index(channel_names,
                                                           tuple(configuration.get("normalization_schemes", ())))
    return validated.to_dict()
