"""More ranks than the planned batch: the batch and accumulation planned for the world size keep the effective batch
where they can, and three gloo ranks with a planned batch of 2 get through the trainer's DDP ``initialize`` and
nnU-Net's own batch split, whose assert (batch >= world size) stopped such runs at the start."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nnugen.trainers.world_batch import WorldBatch, plan_world_batch


@pytest.mark.parametrize(("planned", "world", "expected"), [
    ((2, 4), 8, (8, 1, 8)),  # one sample per rank, the accumulation absorbed: effective 8 as planned
    ((2, 1), 8, (8, 1, 8)),  # one step of one sample per rank is already 8: the effective batch grows
    ((1, 8), 3, (3, 3, 9)),  # 8 / 3 steps: the nearest whole accumulation
    ((2, 3), 4, (4, 2, 8)),  # 6 / 4 = 1.5: a tie goes to the larger batch
    ((4, 2), 2, (4, 2, 8)),  # the batch covers the ranks: nnU-Net's split of the planned batch, unchanged
    ((3, 1), 2, (3, 1, 3)),
    ((2, 4), 1, (2, 4, 8)),
])
def test_the_global_batch_covers_the_ranks_and_keeps_the_effective_batch_where_it_can(planned, world, expected):
    plan = plan_world_batch(*planned, world)
    assert (plan.global_batch, plan.grad_accumulation, plan.effective_batch) == expected
    assert plan.global_batch >= world


def test_the_plan_is_one_log_line_that_says_when_the_effective_batch_changed():
    assert plan_world_batch(2, 4, 8).describe() == (
        "8 ranks: global batch 8 (1 per rank), gradient accumulation 1, effective batch 8 as planned (2 x 4)")
    assert plan_world_batch(2, 1, 8).describe().endswith(
        "effective batch 8 instead of the planned 2 (2 x 1): every rank needs at least one sample")
    assert plan_world_batch(1, 8, 3).describe().endswith("instead of the planned 8 (1 x 8): accumulation comes in "
                                                        "whole steps")
    assert "(1-2 per rank)" in plan_world_batch(3, 1, 2).describe()


@pytest.mark.parametrize("arguments", [(0, 1, 2), (2, 0, 2), (2, 1, 0)])
def test_values_below_one_are_refused(arguments):
    with pytest.raises(ValueError, match="must be at least 1"):
        plan_world_batch(*arguments)


WORLD = 3


def _initialize_worker(rank: int, folder: str) -> None:
    """NnugenTrainer.initialize's DDP branch on a trainer holding only what it reads after nnU-Net's initialize
    (skipped: it needs a preprocessed dataset), then nnU-Net's real ``_set_batch_size_and_oversample``."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    from nnugen.config import section_of
    from nnugen.trainers.nnugen_trainer import NnugenTrainer

    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD)
    try:
        nnUNetTrainer.initialize = lambda self: None  # this process only: nnU-Net's one-process build
        trainer = NnugenTrainer.__new__(NnugenTrainer)
        memory = {"batch_size": 2, "grad_accumulation": 4}
        settings = section_of({"nnugen": {"tasks": {"baseline": {"memory": memory}}}}).task("baseline")
        trainer.settings, trainer.is_ddp, trainer.device = settings, True, torch.device("cpu")
        trainer.configuration_manager = ConfigurationManager.__new__(ConfigurationManager)
        trainer.configuration_manager.configuration = {"batch_size": 2}
        trainer.oversample_foreground_percent = 0.33
        trainer.network, trainer.ddp_find_unused_parameters = torch.nn.Linear(2, 2), False
        trainer.pretrained_weights, trainer.partition = None, None
        trainer._build_loss = lambda: None
        lines = []
        trainer.print_to_log_file = lambda *args, **kwargs: lines.append(" ".join(map(str, args)))
        trainer.initialize()
        torch.save({"batch": trainer.batch_size, "accumulation": trainer.settings.memory.grad_accumulation,
                    "iterations": trainer.num_iterations_per_epoch, "lines": lines,
                    "optimiser_steps": settings.training.iterations_per_epoch,
                    "wrapped": type(trainer.network).__name__}, f"{folder}/rank_{rank}.pt")
        del trainer
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_three_ranks_start_with_a_planned_batch_of_two(tmp_path):
    mp.start_processes(_initialize_worker, args=(str(tmp_path),), nprocs=WORLD, join=True, start_method="spawn")
    results = [torch.load(tmp_path / f"rank_{rank}.pt", weights_only=True) for rank in range(WORLD)]
    plan = plan_world_batch(2, 4, WORLD)
    assert plan == WorldBatch(WORLD, 3, 3, 2, 4)
    for result in results:  # one sample per rank, 3 micro-steps per optimiser step
        assert (result["batch"], result["accumulation"]) == (1, 3)
        assert result["iterations"] == 3 * result["optimiser_steps"]
        assert result["wrapped"] == "DistributedDataParallel"
        assert f"DDP over {plan.describe()}" in result["lines"]

