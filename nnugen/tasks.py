"""The one table of nnugen's tasks: task name -> settings section -> nnU-Net trainer -> model builder.

Every command that names a task reads this table (``nnugen_train --task``, ``nnugen_sample --task``, the final check
that a trainer exists), the model builders in ``nnugen/models/model_builders.py`` are keyed by its sections, and the
trainers take their section and settings changes from it. Adding a task is a row here, its settings in ``config.py``,
its planner choices, its builder and its trainer class (docs/extending.md). Torch-free: the CLIs' ``--help`` reads it.

A row's ``settings_changes`` are deep-merged over the plans' section, as a trainer variant's are: the adapters are the
same section as their base model in another generation mode, trained into their own model folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from nnugen.config import CONFIGURATION_ALIASES, TASK_SECTIONS, TaskSettings, section_of
from nnugen.typed_section import deep_merge


@dataclass(frozen=True)
class Task:
    name: str
    """What ``--task`` says: ``seg``, ``ddpm``, ..."""
    section: str
    """The ``nnugen.tasks.<section>`` of the plans whose settings the task trains with (config.TASK_SECTIONS)."""
    trainer: str
    """The nnU-Net trainer class (``-tr``), also the first part of the model folder's name."""
    settings_changes: Mapping[str, Any] = field(default_factory=dict)
    """Deep-merged over the section's settings (see the module docstring)."""
    samples: bool = False
    """``nnugen_sample`` can sample from its models."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings_changes", MappingProxyType(dict(self.settings_changes)))


TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("seg", "segmentation", "NnugenDiffSegTrainer"),
        Task("ddpm", "ddpm", "NnugenDDPMTrainer", samples=True),
        Task("adapter", "ddpm", "NnugenDDPMTrainer_labelAdapter", {"generation": {"mode": "label_adapter"}},
             samples=True),
        Task("autoencoder", "autoencoder", "NnugenAutoencoderTrainer"),
        Task("ldm", "ldm", "NnugenLDMTrainer", samples=True),
        Task("anomaly", "anomaly", "NnugenAnomalyTrainer"),
        Task("anomaly_adapter", "anomaly", "NnugenAnomalyTrainer_anatomyAdapter",
             {"generation": {"mode": "label_adapter", "condition_dropout": 0.0}}),
        Task("baseline", "baseline", "NnugenBaselineTrainer"),
    )
}

SAMPLING_TASKS = tuple(name for name, task in TASKS.items() if task.samples)
CONFIGURATIONS = ("2d", *CONFIGURATION_ALIASES, "3d_fullres", "3d_lowres")
"""What nnugen's CLIs accept as a configuration (nnU-Net's names, and 3d for 3d_fullres)."""


def task_named(name: str, among: tuple[str, ...] | None = None) -> Task:
    """The row of ``--task name``; ValueError naming the choices (``among``, default every task)."""
    choices = tuple(TASKS) if among is None else among
    if name not in choices:
        raise ValueError(f"--task {name}: choose one of {', '.join(choices)}")
    return TASKS[name]


def task_of_trainer(trainer: str) -> Task | None:
    """The row whose trainer is ``trainer`` (a model folder's or a checkpoint's trainer name), or None."""
    return next((task for task in TASKS.values() if task.trainer == trainer), None)


def task_settings(configuration: dict, section: str, changes: Mapping[str, Any], changed_by: str,
                  configuration_name: str = "") -> TaskSettings:
    """The settings of ``section`` in one configuration of the plans, with ``changes`` deep-merged over them and
    validated (a bad change raises ValueError naming ``changed_by`` and the field)."""
    settings = section_of(configuration, configuration_name).task(section)
    if not changes:
        return settings
    return TaskSettings.from_dict(deep_merge(settings.to_dict(), dict(changes)), f"{changed_by} changes")


def check_table() -> None:
    """ValueError unless every row names a settings section of config.py (the tests call it)."""
    unknown = sorted({task.section for task in TASKS.values()} - set(TASK_SECTIONS))
    if unknown:
        raise ValueError(f"task rows name unknown settings sections {unknown}; valid: {', '.join(TASK_SECTIONS)}")
