"""The foundation end to end through the real CLIs, with nnUNet_extTrainer unset in the environment:
nnUNetv2_plan_and_preprocess -> nnugen_plan -> nnugen_train --task baseline (the session's fixtures, conftest.py) ->
nnUNetv2_train --val and nnUNetv2_predict -tr NnugenBaselineTrainer -p nnugenPlans -> Dice against the test labels."""

from __future__ import annotations

import json

import pytest
from dice import mean_foreground_dice
from e2e_helpers import cli, nnunet_environment, run_all

pytestmark = pytest.mark.slow


def test_baseline_through_real_nnunet_clis(trained_baseline3d, fresh_results):
    # nnugen_plan and nnugen_train --task baseline ran in the session's fixture (conftest.py); nnUNetv2_train --val
    # below writes into the model folder, so this test works on a copy
    root = fresh_results(trained_baseline3d, with_results=True)
    env = nnunet_environment(root)
    assert "nnUNet_extTrainer" not in env
    plans = json.loads((root / "preprocessed" / "Dataset901_Tiny3D" / "nnugenPlans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["nnugen"]["tasks"]["baseline"]["training"]["epochs"] == 3

    # nnugen_train ran nnU-Net's own training to its end; nnU-Net's own CLI finds the trainer too: it validates the
    # fold again (--val) from checkpoint_final
    fold = root / "results" / "Dataset901_Tiny3D" / "NnugenBaselineTrainer__nnugenPlans__3d_fullres" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    assert (fold / "validation" / "summary.json").is_file()
    assert (fold / "validation" / "distances_summary.json").is_file()  # HD95 / NSD beside nnU-Net's summary
    assert not list(fold.glob(".*tmp*")), "a temporary checkpoint file was left behind"

    output = root / "predictions"
    result, _ = run_all([  # side by side: --val writes into the fold, the prediction into its own folder
        ([cli("nnUNetv2_train"), "901", "3d_fullres", "0", "-tr", "NnugenBaselineTrainer", "-p", "nnugenPlans",
          "-device", "cpu", "--val"], env),
        ([cli("nnUNetv2_predict"), "-d", "901", "-c", "3d_fullres", "-f", "0", "-tr", "NnugenBaselineTrainer",
          "-p", "nnugenPlans", "-i", str(root / "raw" / "Dataset901_Tiny3D" / "imagesTs"), "-o", str(output),
          "-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0"], env)])
    assert "Mean Validation Dice" in result.stdout
    dice = mean_foreground_dice(output, root / "raw" / "Dataset901_Tiny3D" / "labelsTs")
    assert 0.0 <= dice <= 1.0
