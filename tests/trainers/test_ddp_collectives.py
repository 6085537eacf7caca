"""nnugen's DDP helpers on two real gloo processes: a DDP-wrapped module stays identical on both ranks when a step
is skipped by all ranks together (the non-finite guard), with and without ``find_unused_parameters``; a module
trained outside DDP (the autoencoder's discriminator) starts from rank 0's weights, gets averaged gradients and
rank 0's batch-norm statistics; extra metrics are averaged over ranks."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nnugen.trainers.ddp import (
    all_ranks_agree,
    average_gradients,
    broadcast_buffers,
    broadcast_module,
    mean_over_ranks,
    wrap_ddp,
)

WORLD = 2


def _worker(rank: int, folder: str, find_unused: bool) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(rank)  # different seeds per rank, as nnugen_train seeds seed + rank
        network = wrap_ddp(torch.nn.Linear(4, 2), torch.device("cpu"), find_unused)
        optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
        for step in range(3):
            optimizer.zero_grad()
            loss = network(torch.randn(3, 4)).pow(2).mean()
            if step == 1 and rank == 1:
                loss = loss * float("nan")  # one rank sees a non-finite loss: every rank must skip
            if all_ranks_agree(bool(torch.isfinite(loss)), torch.device("cpu")):
                loss.backward()
                optimizer.step()
        discriminator = torch.nn.Linear(4, 1)
        broadcast_module(discriminator)
        start = [p.detach().clone() for p in discriminator.parameters()]
        discriminator(torch.full((1, 4), float(rank + 1))).sum().backward()
        average_gradients(discriminator)
        norm = torch.nn.BatchNorm1d(4)
        norm(torch.randn(8, 4) + rank)  # each rank's statistics from its own batch
        broadcast_buffers(norm)
        means = mean_over_ranks({"train/l1": float(rank + 1) * 2}, {"train/l1": 2})
        torch.save({"network": [p.detach().clone() for p in network.parameters()], "start": start,
                         "grads": [p.grad.clone() for p in discriminator.parameters()], "means": means,
                    "norm": [b.clone() for b in norm.buffers()]},
                   f"{folder}/rank_{rank}.pt")
        del network, optimizer  # the DDP reducer goes before its process group, as at the end of a training
        dist.barrier()  # no rank tears gloo down while the other still talks to it (that aborted a rank once in CI)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("find_unused", [False, True])
def test_ranks_stay_in_step(tmp_path, find_unused):
    # spawn, not fork: after earlier tests have started torch's thread pools, forked children can deadlock (the whole
    # suite hung here with fork); spawn costs a fresh torch import per child
    mp.start_processes(_worker, args=(str(tmp_path), find_unused), nprocs=WORLD, join=True, start_method="spawn")
    first, second = (torch.load(tmp_path / f"rank_{rank}.pt", weights_only=True) for rank in range(WORLD))
    assert all(torch.equal(a, b) for a, b in zip(first["network"], second["network"]))
    assert all(torch.equal(a, b) for a, b in zip(first["start"], second["start"]))
    # d(sum(w.x + b))/dw = x: the mean of x = 1 and x = 2 on the two ranks
    assert torch.allclose(first["grads"][0], torch.full((1, 4), 1.5)) and torch.equal(first["grads"][0],
                                                                                     second["grads"][0])
    assert first["means"] == second["means"] == {"train/l1": 1.5}
    assert all(torch.equal(a, b) for a, b in zip(first["norm"], second["norm"]))
