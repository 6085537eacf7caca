"""Kill -9 in the middle of a real nnugen_train run, then nnugen_train --c: the run resumes from the newest
checkpoint, loses no finished epoch and ends with checkpoint_final (issue: crash-safe runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import torch
from e2e_helpers import SMALL_3D_DENOISER, cli, nnunet_environment, run

pytestmark = pytest.mark.slow

EPOCHS = 4


def test_kill_then_continue_finishes_without_losing_epochs(tiny3d, fresh_results):
    root = fresh_results(tiny3d)
    env = nnunet_environment(root)
    # the small denoiser: resuming does not depend on the network's size, and the planned one takes ~5 s an iteration
    settings = (f"segmentation.training.epochs={EPOCHS}", "segmentation.training.iterations_per_epoch=2",
                "segmentation.training.val_iterations_per_epoch=1", *SMALL_3D_DENOISER)
    run([cli("nnugen_plan"), "-d", "901", *(a for s in settings for a in ("--set", s))], env)
    command = [cli("nnugen_train"), "901", "0", "3d", "-device", "cpu", "--seed", "0"]
    fold = root / "results" / "Dataset901_Tiny3D" / "NnugenDiffSegTrainer__nnugenPlans__3d_fullres" / "fold_0"
    latest = fold / "checkpoint_latest.pth"

    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 600
    while not latest.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert latest.exists(), "no checkpoint_latest.pth was written before the deadline"
    os.killpg(process.pid, signal.SIGKILL)  # the trainer and its data-loader workers, mid-epoch
    process.wait()
    finished = torch.load(latest, map_location="cpu", weights_only=False)["current_epoch"]
    assert 1 <= finished < EPOCHS
    assert not (fold / "checkpoint_final.pth").exists()

    run([*command, "--c"], env)
    final = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == EPOCHS
    assert len(final["logging"]["train_losses"]) == EPOCHS, "an epoch was lost or repeated"
    assert (fold / "validation" / "summary.json").is_file()
