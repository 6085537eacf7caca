"""``nnugen_train`` under ``torchrun``: one process per rank, on one node or many.

torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in every process. Each
process joins the process group from them (``env://``), with gloo for ``-device cpu`` and NCCL for cuda, and then
runs what nnU-Net's ``run_ddp`` runs, with nnU-Net's own functions: the trainer (whose DDP hooks plan the batch for
the world size and split it across ranks, put the rank on its device and let rank 0 write), the checkpoint to
continue from, training and the final validation (each rank validates its share of the cases).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

TORCHRUN_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
BACKENDS = {"cpu": "gloo", "cuda": "nccl"}


@dataclass(frozen=True)
class TorchrunRank:
    rank: int
    local_rank: int
    world_size: int


def torchrun_rank(environ: dict[str, str] | None = None) -> TorchrunRank | None:
    """This process's place in a torchrun job, or None when torchrun did not start it."""
    environ = os.environ if environ is None else environ
    present = [name for name in TORCHRUN_VARIABLES if environ.get(name)]
    if not present:
        return None
    missing = [name for name in TORCHRUN_VARIABLES if name not in present]
    if missing:
        raise ValueError(f"{', '.join(present)} set but {', '.join(missing)} not: start nnugen_train with torchrun, "
                         f"or unset {', '.join(present)}")
    try:
        return TorchrunRank(int(environ["RANK"]), int(environ["LOCAL_RANK"]), int(environ["WORLD_SIZE"]))
    except ValueError:
        raise ValueError("RANK, LOCAL_RANK and WORLD_SIZE must be integers; start nnugen_train with torchrun") from None


def check_torchrun_device(device: str) -> str:
    """The process-group backend for a device; ValueError for a device torchrun cannot use."""
    backend = BACKENDS.get(device)
    if backend is None:
        raise ValueError(f"-device {device} cannot run under torchrun; use -device cpu (gloo) or -device cuda (NCCL)")
    return backend


def cpu_threads_per_rank() -> int:
    """The usable cores shared among the processes torchrun started on this node (all of them outside torchrun)."""
    from nnugen.devices import usable_cpu_cores

    return max(1, usable_cpu_cores() // int(os.environ.get("LOCAL_WORLD_SIZE") or 1))


def train_under_torchrun(dataset: str, configuration: str, fold: str, trainer_name: str, plans_identifier: str,
                         device: str, continue_training: bool, only_validation: bool,
                         save_probabilities: bool) -> None:
    """Join the process group, run nnU-Net's training and validation on this rank, leave the group."""
    import torch
    import torch.distributed as dist
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    from nnugen.trainers.ddp import rank_device

    backend = check_torchrun_device(device)
    this_device = rank_device(torch.device(device))
    if this_device.type == "cuda":
        torch.cuda.set_device(this_device)
    dist.init_process_group(backend, init_method="env://")
    try:
        trainer = get_trainer_from_args(dataset, configuration, fold if fold == "all" else int(fold), trainer_name,
                                        plans_identifier, continue_training, device=this_device)
        maybe_load_checkpoint(trainer, continue_training, only_validation)
        if torch.cuda.is_available():  # as nnU-Net's run_ddp
            torch.backends.cudnn.deterministic = False
            torch.backends.cudnn.benchmark = True
        if not only_validation:
            trainer.run_training()
        trainer.perform_actual_validation(save_probabilities)
        dist.barrier()
    finally:
        dist.destroy_process_group()
