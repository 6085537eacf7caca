"""Training time per iteration, diffusion segmentation vs nnU-Net's baseline, as the trainers run it.

Builds ``NnugenBaselineTrainer`` (nnU-Net's network with deep supervision and its Dice + CE loss) and
``NnugenDiffSegTrainer`` (recycling, Dice + CE on the predicted mask) on the same plan, initialises them as nnU-Net
does, draws one batch from each trainer's own data loader, and times the trainers' own ``train_step`` (forward,
loss, backward, gradient clipping, optimiser step) on it, the two taking turns so that machine noise hits both
alike. Prints the median seconds per step and the ratio. Anything the trainers write goes to a temporary folder.

    python benchmarks/train_step_time.py DATASET [-c 3d_fullres] [-n 10] [--trainers A B]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def build(trainer_name: str, dataset: str, configuration: str):
    """A trainer as nnUNetv2_train builds it (fold 0, CPU), initialised, and one batch from its data loader."""
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(dataset, configuration, 0, trainer_name, "nnugenPlans", device=torch.device("cpu"))
    trainer.initialize()
    train_loader, _ = trainer.get_dataloaders()
    return trainer, next(train_loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="dataset ID, planned and preprocessed with nnugen_plan")
    parser.add_argument("-c", default="3d_fullres")
    parser.add_argument("-n", type=int, default=10, help="timed steps per trainer (after 2 warm-up steps)")
    parser.add_argument("--trainers", nargs="+", default=["NnugenBaselineTrainer", "NnugenDiffSegTrainer"])
    args = parser.parse_args()
    os.environ["nnUNet_results"] = tempfile.mkdtemp(prefix="nnugen_step_time_")  # logs and folders land here
    os.environ["nnUNet_n_proc_DA"] = "0"  # one batch from a single-threaded loader is all this needs
    import torch

    from nnugen.run.ext_trainer_path import ensure_ext_trainer_path

    ensure_ext_trainer_path()
    torch.manual_seed(0)
    runs = {name: build(name, args.dataset, args.c) for name in args.trainers}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for step in range(args.n + 2):
        for name, (trainer, batch) in runs.items():
            start = time.perf_counter()
            trainer.train_step(batch)
            if step >= 2:
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    trainer, batch = next(iter(runs.values()))
    print(f"configuration {args.c}, patch {trainer.configuration_manager.patch_size}, batch {batch['data'].shape[0]}, "
          f"torch threads {torch.get_num_threads()}")
    first = args.trainers[0]
    for name, value in medians.items():
        print(f"{name:>30}: {value:.3f} s per training step (median of {args.n}), "
              f"{value / medians[first]:.2f} x {first}")


if __name__ == "__main__":
    main()
