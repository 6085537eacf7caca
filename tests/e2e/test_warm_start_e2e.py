"""Diffusion segmentation started from a trained nnU-Net, through the real CLIs: nnugen_train --task baseline trains
nnU-Net's network (nnU-Net's trainer, checkpoint format and plan; the session's run in conftest.py); nnugen_train
--task seg -pretrained_weights maps it into the denoiser. With a learning rate too small to move a weight, the
diffusion model's segmentations (nnugen_predict, sampled from noise) are nnUNetv2_predict's: the denoiser ignores the
noisy mask and the timestep until it learns to use them. Bad checkpoints are refused in one line before anything is
written."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk
from e2e_helpers import cli, nnunet_environment, run, run_all

pytestmark = pytest.mark.slow

SHORT = ("training.epochs=1", "training.val_iterations_per_epoch=1")


def test_seg_starts_from_a_trained_nnunet(trained_baseline3d, fresh_results):
    root = fresh_results(trained_baseline3d, with_results=True)  # the session's trained baseline (conftest.py)
    env = nnunet_environment(root)
    settings = [f"segmentation.{s}" for s in (*SHORT, "training.iterations_per_epoch=1", "training.initial_lr=1e-9",
                                               "training.val_sampling_steps=2", "sampler.steps=2")]
    run([cli("nnugen_plan"), "-d", "901", *(a for s in settings for a in ("--set", s))], env)
    results = root / "results" / "Dataset901_Tiny3D"
    baseline = results / "NnugenBaselineTrainer__nnugenPlans__3d_fullres"
    checkpoint = baseline / "fold_0" / "checkpoint_final.pth"

    run([cli("nnugen_train"), "901", "0", "3d", "--task", "seg", "-device", "cpu", "--seed", "0",
         "-pretrained_weights", str(checkpoint)], env)
    fold = results / "NnugenDiffSegTrainer__nnugenPlans__3d_fullres" / "fold_0"
    (log,) = fold.glob("training_log_*.txt")
    assert f"started from {checkpoint}" in log.read_text()

    images = root / "raw" / "Dataset901_Tiny3D" / "imagesTs"
    run_all([([cli("nnUNetv2_predict"), "-d", "901", "-c", "3d_fullres", "-f", "0", "-tr", "NnugenBaselineTrainer",
               "-p", "nnugenPlans", "-i", str(images), "-o", str(root / "nnunet"), "-device", "cpu", "--disable_tta",
               "-npp", "0", "-nps", "0", "--save_probabilities"], env),
             ([cli("nnugen_predict"), "-d", "901", "-c", "3d", "-f", "0", "-i", str(images), "-o",
               str(root / "diffusion"), "-device", "cpu", "-npp", "0", "-nps", "0", "--save_probabilities"], env)])
    cases = sorted(p.name for p in (root / "nnunet").glob("*.nii.gz"))
    assert cases and cases == sorted(p.name for p in (root / "diffusion").glob("*.nii.gz"))
    # nnU-Net's sliding window sums Gaussian-weighted tiles in float16: where the weight is tiny (the outer voxels of a
    # tile that is the whole 32^3 image) that sum loses most digits, for any network. Compare inside.
    inner = (slice(None), *(slice(4, -4),) * 3)
    for name in cases:
        case = name.removesuffix(".nii.gz")
        nnunet = np.load(root / "nnunet" / f"{case}.npz")["probabilities"][inner]
        diffusion = np.load(root / "diffusion" / f"{case}.npz")["probabilities"][inner]
        np.testing.assert_allclose(diffusion, nnunet, rtol=0, atol=2e-3, err_msg=case)
        labels_nnunet = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "nnunet" / name)))[inner[1:]]
        labels_diffusion = sitk.GetArrayFromImage(sitk.ReadImage(str(root / "diffusion" / name)))[inner[1:]]
        assert len(np.unique(labels_nnunet)) > 1, "the baseline segments nothing: the comparison would be empty"
        top_two = np.sort(nnunet, axis=0)[-2:]
        clear = top_two[1] - top_two[0] > 4e-3  # not a tie within the float16 rounding above
        assert np.array_equal(labels_diffusion[clear], labels_nnunet[clear]), case


def test_a_checkpoint_of_another_network_is_refused_before_anything_is_written(trained_diffseg3d):
    """The CLI's one line for a checkpoint whose layers the planned network lacks (a diffusion model's, not
    nnU-Net's); the checks that need no checkpoint (task, --c / --val, a missing file) are tests/run/
    test_pretrained_request.py."""
    root = trained_diffseg3d.parents[2]
    own = trained_diffseg3d / "fold_0" / "checkpoint_final.pth"
    result = subprocess.run([cli("nnugen_train"), "901", "1", "3d", "-device", "cpu", "--task", "seg",
                             "-pretrained_weights", str(own)], env=nnunet_environment(root), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("nnugen_train: error: ")
    assert re.search(r"layer denoiser\.time_embedding\.\S+ has no counterpart in the planned denoiser", line), line
    assert not (trained_diffseg3d / "fold_1").exists()
