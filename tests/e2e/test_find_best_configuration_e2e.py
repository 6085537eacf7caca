"""``nnUNetv2_find_best_configuration`` and ``nnUNetv2_ensemble`` over nnugen segmentation models, as docs/cli.md
promises (issue 17, part 4): the session's diffusion segmenter (2d, fold 0) validated again with ``--npz`` and the
baseline trained briefly with ``--npz`` beside it; nnU-Net's own tools then rank both models and their ensemble on
fold 0; the ensemble is then run as its instructions say (``nnUNetv2_predict --save_probabilities`` with each model,
``nnUNetv2_ensemble``) and checked against the argmax of the models' mean probabilities."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from e2e_helpers import cli, diffseg_settings, nnunet_environment, run, run_all

pytestmark = pytest.mark.slow

BASELINE = ("baseline.training.epochs=1", "baseline.training.iterations_per_epoch=2",
            "baseline.training.val_iterations_per_epoch=1")
MODELS = ("NnugenDiffSegTrainer__nnugenPlans__2d", "NnugenBaselineTrainer__nnugenPlans__2d")


@pytest.fixture(scope="module")
def two_models(trained_diffseg2d, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A copy of the diffusion segmenter's nnU-Net folders, its fold 0 validated again with --npz, and
    NnugenBaselineTrainer (fold 0, --npz) trained beside it."""
    root = tmp_path_factory.mktemp("find_best")
    shutil.copytree(trained_diffseg2d.parents[2], root, dirs_exist_ok=True)
    env = nnunet_environment(root)
    # the same plans as the segmenter was trained with (its --val reads them), with the baseline's short run added
    run([cli("nnugen_plan"), "-d", "902", *(a for s in diffseg_settings("2d") + BASELINE for a in ("--set", s))], env)
    run_all([([cli("nnugen_train"), "902", "0", "2d", "-device", "cpu", "--seed", "0", "--val", "--npz"], env),
             ([cli("nnugen_train"), "902", "0", "2d", "--task", "baseline", "-device", "cpu", "--seed", "0", "--npz"],
              env)])  # side by side: they write different model folders
    return root, env


def _segmentations(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(folder.glob("*.nii.gz"))}


def test_find_best_configuration_ranks_nnugen_models_and_their_ensemble(two_models, tmp_path):
    root, env = two_models
    dataset = root / "results" / "Dataset902_Tiny2D"
    for model in MODELS:
        validation = dataset / model / "fold_0" / "validation"
        assert sorted(p.name[:-4] for p in validation.glob("*.npz")) == \
            sorted(p.name[:-7] for p in validation.glob("*.nii.gz")), f"{model}: --npz wrote no probabilities"

    result = run([cli("nnUNetv2_find_best_configuration"), "902", "-c", "2d", "-p", "nnugenPlans",
                  "-tr", "NnugenDiffSegTrainer", "NnugenBaselineTrainer", "-f", "0", "-np", "1"], env)
    information = json.loads((dataset / "inference_information.json").read_text())
    ensemble = f"ensemble___{MODELS[0]}___{MODELS[1]}___0"
    assert sorted(information["all_results"]) == sorted([*MODELS, ensemble])
    # each model's score is nnU-Net's foreground Dice of its fold-0 validation, as its own summary.json says
    for model in MODELS:
        summary = json.loads((dataset / model / "fold_0" / "validation" / "summary.json").read_text())
        assert information["all_results"][model] == summary["foreground_mean"]["Dice"]
    best = max(information["all_results"].values())
    assert information["best_model_or_ensemble"]["result_on_crossval_pre_pp"] == best
    assert "*Best*" in result.stdout and (dataset / "inference_instructions.txt").is_file()

    # the ensemble it recommends, run as its instructions say: both models predict with --save_probabilities and
    # nnUNetv2_ensemble averages them; the result is the argmax of the two models' mean probabilities
    images = root / "raw" / "Dataset902_Tiny2D" / "imagesTs"
    outputs = [tmp_path / f"model_{k}" for k in range(len(MODELS))]
    run_all([([cli("nnUNetv2_predict"), "-d", "902", "-c", "2d", "-f", "0", "-tr", model.split("__")[0],
               "-p", "nnugenPlans", "-i", str(images), "-o", str(output), "-device", "cpu", "--save_probabilities",
               "-npp", "0", "-nps", "0"], env) for model, output in zip(MODELS, outputs)])
    ensembled = tmp_path / "ensembled"
    run([cli("nnUNetv2_ensemble"), "-i", *map(str, outputs), "-o", str(ensembled), "-np", "1"], env)
    segmentations = _segmentations(ensembled)
    assert sorted(segmentations) == sorted(p.name for p in outputs[0].glob("*.nii.gz")) and segmentations
    for name, segmentation in segmentations.items():
        case = name[: -len(".nii.gz")]
        mean = sum(np.load(output / f"{case}.npz")["probabilities"].astype(np.float32) for output in outputs) / 2
        expected = np.argmax(mean, axis=0)  # (1, X, Y): nnU-Net's 2D images carry a unit axis; SimpleITK drops it
        assert expected.shape in (segmentation.shape, (1, *segmentation.shape))
        np.testing.assert_array_equal(segmentation, expected.reshape(segmentation.shape))
