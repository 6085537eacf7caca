"""``world_settings`` (nnugen/trainers/world_batch.py): the task's settings with the accumulation planned for the
world size, the rest unchanged."""

from __future__ import annotations

from dataclasses import replace

from nnugen.config import section_of
from nnugen.trainers.world_batch import WorldBatch, world_settings


def _settings(batch_size: int, grad_accumulation: int):
    memory = {"batch_size": batch_size, "grad_accumulation": grad_accumulation}
    return section_of({"nnugen": {"tasks": {"baseline": {"memory": memory}}}}).task("baseline")


def test_three_ranks_and_a_planned_batch_of_two_accumulate_three_steps():
    settings = _settings(2, 4)
    changed, plan = world_settings(settings, 3)
    assert plan == WorldBatch(3, 3, 3, 2, 4)
    assert changed == replace(settings, memory=replace(settings.memory, grad_accumulation=3))
    assert changed.memory.batch_size == 2  # the batch a rank may hold, as planned; nnU-Net splits plan.global_batch


def test_a_batch_that_covers_the_ranks_keeps_the_plan():
    settings = _settings(8, 2)
    changed, plan = world_settings(settings, 4)
    assert changed == settings and plan.global_batch == 8 and plan.grad_accumulation == 2
