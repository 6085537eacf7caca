"""Gradient accumulation under DDP, on two real gloo processes: the micro-steps that only accumulate run under
``no_sync`` (one gradient all-reduce per optimiser step, not one per micro-step), and the step equals one step on the
mean loss of all micro-batches of all ranks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

from nnugen.trainers.ddp import wrap_ddp
from nnugen.trainers.nnugen_trainer import NnugenTrainer
from nnugen.trainers.nonfinite_guard import NonFiniteGuard

WORLD, ACCUMULATION, MICRO_STEPS = 2, 2, 4


def _micro_batch(rank: int, step: int) -> torch.Tensor:
    return torch.randn(3, 4, generator=torch.Generator().manual_seed(100 * rank + step))


def _trainer(network: torch.nn.Module, is_ddp: bool) -> NnugenTrainer:
    """Only what ``training_step`` (the step of nnU-Net's ``train_step``, without the progress report) reads."""
    trainer = NnugenTrainer.__new__(NnugenTrainer)
    trainer.network, trainer.is_ddp, trainer.device = network, is_ddp, torch.device("cpu")
    trainer.optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    trainer.grad_scaler, trainer.amp_dtype, trainer._micro_step = None, None, 0
    trainer.settings = SimpleNamespace(memory=SimpleNamespace(grad_accumulation=ACCUMULATION, amp="fp32"))
    trainer.nonfinite = NonFiniteGuard(3)
    trainer.print_to_log_file = print
    trainer.compute_loss = lambda data, target: network(data).pow(2).mean()
    return trainer


def _worker(rank: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)
        network = wrap_ddp(torch.nn.Linear(4, 2), torch.device("cpu"), False)
        all_reduces = []

        def counting_hook(state, bucket):
            all_reduces.append(1)
            return allreduce_hook(state, bucket)

        network.register_comm_hook(None, counting_hook)
        trainer = _trainer(network, is_ddp=True)
        for step in range(MICRO_STEPS):
            trainer.training_step({"data": _micro_batch(rank, step), "target": torch.zeros(1)})
        torch.save({"weights": [p.detach().clone() for p in network.parameters()], "all_reduces": len(all_reduces)},
                   f"{folder}/rank_{rank}.pt")
        del network, trainer
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_accumulating_micro_steps_skip_the_all_reduce(tmp_path):
    mp.start_processes(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True, start_method="spawn")
    results = [torch.load(tmp_path / f"rank_{rank}.pt", weights_only=True) for rank in range(WORLD)]
    assert [r["all_reduces"] for r in results] == [MICRO_STEPS // ACCUMULATION] * WORLD
    assert all(torch.equal(a, b) for a, b in zip(results[0]["weights"], results[1]["weights"]))
    # the same optimiser steps in one process: each step on the mean loss of the ranks' micro-batches
    torch.manual_seed(0)
    single = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(single.parameters(), lr=0.1)
    for first in range(0, MICRO_STEPS, ACCUMULATION):
        optimizer.zero_grad()
        losses = [single(_micro_batch(rank, step)).pow(2).mean() for rank in range(WORLD)
                  for step in range(first, first + ACCUMULATION)]
        torch.stack(losses).mean().backward()
        torch.nn.utils.clip_grad_norm_(single.parameters(), 12)
        optimizer.step()
    for ddp_weight, weight in zip(results[0]["weights"], single.parameters()):
        np.testing.assert_allclose(ddp_weight.numpy(), weight.detach().numpy(), rtol=1e-5, atol=1e-6)
