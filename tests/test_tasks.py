"""The one task table (nnugen/tasks.py) against what it names: config's settings sections, the trainers nnU-Net's
lookup finds, the model builders, and the commands that read it."""

from __future__ import annotations

import pytest

from nnugen.config import TASK_SECTIONS
from nnugen.tasks import CONFIGURATIONS, SAMPLING_TASKS, TASKS, check_table, task_named, task_of_trainer


def test_every_row_names_a_settings_section():
    check_table()
    assert {task.section for task in TASKS.values()} == set(TASK_SECTIONS)


def test_every_row_has_its_trainer_exported_for_nnunets_lookup_and_reading_the_rows_section():
    from nnugen.nnunet_ext import nnugen_trainers

    for task in TASKS.values():
        trainer = getattr(nnugen_trainers, task.trainer)
        assert task.trainer in nnugen_trainers.__all__
        assert trainer.nnugen_task == task.section, task.name
        assert dict(trainer.settings_changes) == dict(task.settings_changes), task.name


def test_every_section_but_the_baseline_has_a_model_builder():
    from nnugen.models.model_builders import MODEL_BUILDERS

    assert set(MODEL_BUILDERS) == set(TASK_SECTIONS) - {"baseline"}


def test_lookups():
    assert task_named("adapter").trainer == "NnugenDDPMTrainer_labelAdapter"
    assert task_of_trainer("NnugenLDMTrainer") is TASKS["ldm"]
    assert task_of_trainer("nnUNetTrainer") is None
    assert SAMPLING_TASKS == ("ddpm", "adapter", "ldm")
    assert "3d" in CONFIGURATIONS and "3d_fullres" in CONFIGURATIONS
    with pytest.raises(ValueError, match="^--task seg: choose one of ddpm, adapter, ldm$"):
        task_named("seg", SAMPLING_TASKS)


def test_rows_cannot_be_changed_in_place():
    with pytest.raises(TypeError):
        TASKS["adapter"].settings_changes["generation"] = {}  # a MappingProxy: read only
