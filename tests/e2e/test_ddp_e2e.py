"""``torchrun --standalone --nproc_per_node 3 nnugen_train ... -device cpu``: three gloo ranks train the diffusion
segmentation trainer together, more ranks than the planned batch of 2 (nnU-Net alone stops there with an
AssertionError on every rank). The batch is planned for the world size (one sample per rank, logged), all ranks end
with the same weights (those in checkpoint_final), and only one set of files is written."""

from __future__ import annotations

import pytest
import torch
from e2e_helpers import cli, nnunet_environment, run

pytestmark = pytest.mark.slow

SETTINGS = ("segmentation.training.epochs=1", "segmentation.training.iterations_per_epoch=3",
            "segmentation.training.val_iterations_per_epoch=1", "segmentation.training.val_sampling_steps=2",
            "segmentation.sampler.steps=2")


RANKS = 3


def test_torchrun_more_cpu_ranks_than_the_batch_train_one_model(tiny2d, fresh_results, tmp_path):
    root = fresh_results(tiny2d)
    dumps = tmp_path / "rank_weights"
    dumps.mkdir()
    env = nnunet_environment(root, NNUGEN_RANK_WEIGHTS_DIR=str(dumps))
    run([cli("nnugen_plan"), "-d", "902", *(a for s in SETTINGS for a in ("--set", s))], env)
    result = run([cli("torchrun"), "--standalone", "--nproc_per_node", str(RANKS), cli("nnugen_train"), "902", "0",
                  "2d", "-device", "cpu", "--seed", "0"], env)
    output = result.stdout + result.stderr
    assert all(f"worker {rank} batch_size 1" in output for rank in range(RANKS)), "nnU-Net's batch split missing"

    model = root / "results" / "Dataset902_Tiny2D" / "NnugenDiffSegTrainer__nnugenPlans__2d"
    fold = model / "fold_0"
    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert len(final["logging"]["train_losses"]) == 1 and final["nnugen_world_size"] == RANKS
    rank0, *others = (torch.load(dumps / f"rank_{rank}.pt", weights_only=True)["network"] for rank in range(RANKS))
    for other in others:
        assert rank0.keys() == other.keys() == final["network_weights"].keys()
        differing = [k for k in rank0 if not torch.equal(rank0[k], other[k])]
        assert not differing, f"ranks ended with different weights, e.g. {differing[:3]}"
    assert all(torch.equal(rank0[k], final["network_weights"][k]) for k in rank0)

    written = sorted(str(p.relative_to(model)) for p in model.rglob("*") if p.is_file())
    logs = [name for name in written if name.startswith("fold_0/training_log_")]
    assert len(logs) == 1, written
    assert sorted(set(written) - set(logs)) == [
        "dataset.json", "dataset_fingerprint.json", "fold_0/checkpoint_best.pth", "fold_0/checkpoint_final.pth",
        "fold_0/debug.json", "fold_0/previews/epoch_0000.png", "fold_0/progress.png", "fold_0/training_progress.json",
        "fold_0/validation/Tiny2D_003.nii.gz", "fold_0/validation/Tiny2D_005.nii.gz",
        "fold_0/validation/distances_summary.json", "fold_0/validation/summary.json", "plans.json"], written
    log = (model / logs[0]).read_text()
    assert "nnugen metrics: train/diffusion_dice_ce" in log
    assert f"DDP over {RANKS} ranks: global batch {RANKS} (1 per rank)" in log
