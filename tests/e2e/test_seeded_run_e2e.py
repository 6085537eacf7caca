"""Seeded training runs repeat exactly on the CPU: nnU-Net's whole training loop (``run_training``: augmentation
workers, training, validation inside training, checkpoint_final), run in this process with the seed that
``nnugen_train --seed`` passes on, gives the same weights twice, and other weights with another seed. Without
nnugen's seeded workers, the runs differ (nnU-Net's workers reseed NumPy from the operating system)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from e2e_helpers import in_process_trainer, nnunet_environment, planned_copy

pytestmark = pytest.mark.slow

SETTINGS = ("segmentation.training.epochs=1", "segmentation.training.iterations_per_epoch=3",
            "segmentation.training.val_iterations_per_epoch=1", "segmentation.training.val_sampling_steps=2",
            "segmentation.sampler.steps=2")


@pytest.fixture(scope="module")
def planned2d(tiny2d, tmp_path_factory) -> Path:
    """A copy of dataset 902 planned by nnugen_plan with SETTINGS once for this module; each test works on a copy."""
    root = tmp_path_factory.mktemp("seeded2d")
    planned_copy(tiny2d, root, 902, SETTINGS)
    return root


@pytest.fixture()
def seeded_training(planned2d, fresh_results, monkeypatch):
    root = fresh_results(planned2d)
    env = nnunet_environment(root)
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, env[key])
    folder = root / "preprocessed" / "Dataset902_Tiny2D"

    def train(seed: int, workers: int) -> dict[str, torch.Tensor]:
        """One training run; the network weights of its checkpoint_final."""
        from nnugen.folders.checkpoint_files import load_nnunet_checkpoint
        from nnugen.trainers.nnugen_diffseg_trainer import NnugenDiffSegTrainer

        monkeypatch.setenv("NNUGEN_SEED", str(seed))
        monkeypatch.setenv("nnUNet_n_proc_DA", str(workers))
        trainer = in_process_trainer(NnugenDiffSegTrainer, folder, "2d")
        trainer.run_training()
        checkpoint = load_nnunet_checkpoint(f"{trainer.output_folder}/checkpoint_final.pth", torch.device("cpu"))
        return checkpoint["network_weights"]

    return train


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def _differences(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> str:
    """The tensors that differ, each with its largest difference, for the failure message."""
    return "; ".join(f"{k}: {(a[k].float() - b[k].float()).abs().max().item():.3g}"
                     for k in a if not torch.equal(a[k], b[k]))


def _within_rounding(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Every tensor within 1e-4 of its largest magnitude: float rounding, 30x below what another batch makes."""
    return all(float((a[k].float() - b[k].float()).abs().max()) <= 1e-4 * max(float(a[k].abs().max()), 1e-6)
               for k in a)


@pytest.mark.parametrize("workers", [1, 2])
def test_seeded_runs_repeat(seeded_training, workers):
    first = seeded_training(0, workers)
    second = seeded_training(0, workers)
    # One worker: bit for bit. Two: CI once (2026-12-06) saw a rerun differ below the printout's 4 decimals, which 10
    # reruns here (4 quiet, 6 under a 3-process load) did not repeat; a batch drawn or ordered differently changes
    # weights by up to 3e-3 (docs/scaling.md, "Seeds"), which this still catches.
    same = _same if workers == 1 else _within_rounding
    assert same(first, second), f"two runs with seed 0 and {workers} worker(s) differ: {_differences(first, second)}"
    if workers == 1:  # once is enough: the seed reaches the run
        assert not _same(first, seeded_training(1, workers)), "seed 1 gave the weights of seed 0"
