"""DDP on the CPU with gloo: time per training iteration, 1 process against 2, at the same global batch.

Builds the diffusion segmentation network exactly as ``NnugenDiffSegTrainer`` does from a plan, wraps it as the
trainer does under ``torchrun`` (``nnugen.trainers.ddp.wrap_ddp``), splits the global batch over the ranks as
nnU-Net does, and times full optimisation steps (forward, loss, backward with the gradient all-reduce, SGD step) on
a random batch at the plan's patch size. The cores are shared as ``nnugen_train`` shares them under torchrun
(cores / processes threads each); one process on one thread is timed too, to separate the effect of the threads
from that of the processes. Prints the median seconds per iteration and samples per second.

    python benchmarks/ddp_step_time.py PATH/TO/nnugenPlans.json PATH/TO/dataset.json [-c 2d] [-n 20] [-b 2 4]

The tiny phantoms of the tests make a suitable plan: write_phantom_dataset (nnugen.demo.phantom), then
nnUNetv2_plan_and_preprocess -d ID -c 2d -np 2 -npfp 2 and nnugen_plan -d ID.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnugen.diffusion import one_hot
from nnugen.trainers.ddp import wrap_ddp
from nnugen.trainers.nnugen_diffseg_trainer import NnugenDiffSegTrainer


def rank_batch(global_batch: int, world: int, rank: int) -> int:
    """This rank's share of the global batch; the first ranks take the remainder (nnU-Net's split)."""
    return global_batch // world + (1 if rank < global_batch % world else 0)


def _rank(rank: int, world: int, threads: int, folder: str, args: argparse.Namespace, global_batch: int) -> None:
    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world)
    manager = PlansManager(json.loads(Path(args.plans).read_text()))
    configuration = manager.get_configuration(args.c)
    dataset_json = json.loads(Path(args.dataset_json).read_text())
    channels = determine_num_input_channels(manager, configuration, dataset_json)
    classes = manager.get_label_manager(dataset_json).num_segmentation_heads
    torch.manual_seed(rank)
    network = NnugenDiffSegTrainer.build_network_architecture(manager, configuration, channels, classes, False)
    if world > 1:
        network = wrap_ddp(network, torch.device("cpu"), find_unused_parameters=False)
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, momentum=0.99)
    batch = rank_batch(global_batch, world, rank)
    image = torch.randn(batch, channels, *configuration.patch_size)
    target = one_hot(torch.randint(0, classes, (batch, 1, *configuration.patch_size)), classes)
    times = []
    for step in range(args.n + 2):
        start = time.perf_counter()
        network(image, target).backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
    if rank == 0:
        Path(folder, "times.json").write_text(json.dumps(times))
    if world > 1:
        dist.destroy_process_group()


def measure(world: int, threads: int, global_batch: int, args: argparse.Namespace) -> float:
    """Median seconds per iteration on rank 0."""
    with tempfile.TemporaryDirectory() as folder:
        mp.start_processes(_rank, args=(world, threads, folder, args, global_batch), nprocs=world, join=True,
                           start_method="fork")
        return statistics.median(json.loads(Path(folder, "times.json").read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plans")
    parser.add_argument("dataset_json")
    parser.add_argument("-c", default="2d", help="configuration (default 2d)")
    parser.add_argument("-n", type=int, default=20, help="timed iterations per run (after 2 warm-up iterations)")
    parser.add_argument("-b", type=int, nargs="+", default=[2, 4], help="global batch sizes (default 2 4)")
    args = parser.parse_args()
    print(f"{multiprocessing.cpu_count()} CPU cores, configuration {args.c}, median of {args.n} iterations")
    cores = multiprocessing.cpu_count()
    print("| processes x threads | global batch | per process | s / iteration | samples / s |")
    print("| --- | --- | --- | --- | --- |")
    for global_batch in args.b:
        for world, threads in ((1, cores), (1, 1), (2, max(1, cores // 2))):
            seconds = measure(world, threads, global_batch, args)
            print(f"| {world} x {threads} | {global_batch} | {rank_batch(global_batch, world, 0)} | {seconds:.3f} | "
                  f"{global_batch / seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
