"""The batch and gradient accumulation of a run over several processes (DDP), planned from the memory plan's.

nnU-Net splits the planned batch over the ranks and asserts that every rank gets at least one sample, so a 3D plan
with a batch of 2 cannot start on 8 GPUs. Here the global batch of one step is ``max(planned batch, world size)``:
nnU-Net's split, unchanged, when the batch covers the ranks, else one sample per rank (a rank's batch never exceeds
the planned batch, which the memory plan says fits one device). The gradient accumulation is then chosen so that
global batch x accumulation, the effective batch, is as close as possible to the planned batch x accumulation; when
even one step of one sample per rank exceeds it, the effective batch grows and the plan says so.

    >>> plan_world_batch(2, 4, 8).describe()
    '8 ranks: global batch 8 (1 per rank), gradient accumulation 1, effective batch 8 as planned (2 x 4)'
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nnugen.config import TaskSettings


@dataclass(frozen=True)
class WorldBatch:
    """``global_batch`` samples per micro-step over all ranks (split by nnU-Net's rule), ``grad_accumulation``
    micro-steps per optimiser step; ``planned_batch`` x ``planned_accumulation`` is what the memory plan asked for."""

    world_size: int
    global_batch: int
    grad_accumulation: int
    planned_batch: int
    planned_accumulation: int

    @property
    def effective_batch(self) -> int:
        return self.global_batch * self.grad_accumulation

    @property
    def planned_effective_batch(self) -> int:
        return self.planned_batch * self.planned_accumulation

    def describe(self) -> str:
        """One line for the training log."""
        per_rank = self.global_batch // self.world_size
        split = f"{per_rank} per rank" if per_rank * self.world_size == self.global_batch \
            else f"{per_rank}-{per_rank + 1} per rank"
        planned = f"{self.planned_batch} x {self.planned_accumulation}"
        if self.effective_batch == self.planned_effective_batch:
            outcome = f"effective batch {self.effective_batch} as planned ({planned})"
        else:
            why = "every rank needs at least one sample" if self.global_batch > self.planned_effective_batch \
                else "accumulation comes in whole steps"
            outcome = (f"effective batch {self.effective_batch} instead of the planned {self.planned_effective_batch} "
                       f"({planned}): {why}")
        return (f"{self.world_size} ranks: global batch {self.global_batch} ({split}), gradient accumulation "
                f"{self.grad_accumulation}, {outcome}")


def plan_world_batch(batch_size: int, grad_accumulation: int, world_size: int) -> WorldBatch:
    """The global batch and accumulation for ``world_size`` ranks from the plan's (``memory.batch_size``,
    ``memory.grad_accumulation``); ValueError for values below 1."""
    for name, value in (("memory.batch_size", batch_size), ("memory.grad_accumulation", grad_accumulation),
                        ("the world size", world_size)):
        if value < 1:
            raise ValueError(f"{name} is {value}; it must be at least 1")
    if batch_size >= world_size:
        return WorldBatch(world_size, batch_size, grad_accumulation, batch_size, grad_accumulation)
    # one sample per rank; the accumulation whose effective batch is nearest the planned one, the larger on a tie
    accumulation = max(1, (2 * batch_size * grad_accumulation + world_size) // (2 * world_size))
    return WorldBatch(world_size, world_size, accumulation, batch_size, grad_accumulation)


def world_settings(settings: TaskSettings, world_size: int) -> tuple[TaskSettings, WorldBatch]:
    """The task's ``settings`` with the gradient accumulation planned for ``world_size`` ranks, and that plan (whose
    ``global_batch`` nnU-Net splits over the ranks)."""
    memory = settings.memory
    plan = plan_world_batch(memory.batch_size, memory.grad_accumulation, world_size)
    return replace(settings, memory=replace(memory, grad_accumulation=plan.grad_accumulation)), plan
