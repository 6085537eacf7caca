"""Counterfactual anomaly segmentation through the real CLIs on a synthetic-lesion dataset (32^3 phantoms): healthy-only
training with nnugen_train --task anomaly, the threshold chosen on the fold's validation cases and stored in the
model, then the real nnUNetv2_predict writing lesion segmentations and nnugen_predict writing anomaly maps and
counterfactuals (pixel and latent mode); bad inputs (no healthy case, a strength outside (0, 1], a threshold file of
another model). A model without a threshold is tested in tests/anomaly/test_anomaly_outputs.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from e2e_helpers import cli, nnunet_environment, run

pytestmark = pytest.mark.slow

DATASET_ID, NAME = 931, "Lesions"
FOLDER = f"Dataset{DATASET_ID:03d}_{NAME}"
TRAINER = "NnugenAnomalyTrainer"
TINY = ("anomaly.training.epochs=1", "anomaly.training.iterations_per_epoch=2",
        "anomaly.training.val_iterations_per_epoch=1", "anomaly.denoiser.features_per_stage=[16,32,64,128]",
        "anomaly.denoiser.attention_stages=[]", "anomaly.sampler.steps=2", "anomaly.sampler.seeds=2",
        "anomaly.anomaly.strengths=[0.5]")


def _split(root: Path, train: list[str], val: list[str]) -> None:
    """One fold of our own: nnU-Net reads splits_final.json instead of drawing its 5-fold split."""
    (root / "preprocessed" / FOLDER / "splits_final.json").write_text(json.dumps([{"train": train, "val": val}]))


@pytest.fixture(scope="module")
def anomaly_run(tmp_path_factory) -> tuple[Path, dict[str, str], dict]:
    from nnugen.demo.lesion_dataset import write_lesion_dataset
    from nnugen.demo.phantom import PhantomSpec

    root = tmp_path_factory.mktemp("anomaly")
    raw = write_lesion_dataset(root / "raw", DATASET_ID, NAME, n_healthy_train=6, n_val_lesion=3, n_test_lesion=2,
                               seed=0, spec=PhantomSpec(shape=(32, 32, 32)))
    lesions = json.loads((raw / "dataset.json").read_text())["nnugen_lesions"]
    env = nnunet_environment(root)
    run([cli("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "2", "-npfp", "2",
         "--verify_dataset_integrity"], env)
    healthy, lesion_cases = lesions["healthy_cases"], sorted(lesions["lesion_families"])[:3]
    # fold 0: five healthy cases and a lesion case (left out of training); one healthy and two lesion cases to choose
    # the threshold on
    _split(root, healthy[:5] + lesion_cases[:1], healthy[5:] + lesion_cases[1:])
    run([cli("nnugen_plan"), "-d", str(DATASET_ID), *(a for s in TINY for a in ("--set", s))], env)
    run([cli("nnugen_train"), str(DATASET_ID), "0", "3d", "--task", "anomaly", "-device", "cpu", "--seed", "0"], env)
    return root, env, {"healthy": healthy, "lesion": lesion_cases}


def _fold(root: Path) -> Path:
    return root / "results" / FOLDER / f"{TRAINER}__nnugenPlans__3d_fullres" / "fold_0"


def test_trains_on_healthy_cases_and_chooses_the_threshold_on_validation(anomaly_run):
    from nnugen.anomaly import ThresholdRecord
    from nnugen.folders.model_folder import model_id

    root, _, cases = anomaly_run
    fold = _fold(root)
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "anomaly training on healthy cases only: 5 of the fold's 6 training cases" in log
    # its own progress: the best validation loss, no pseudo Dice (minus the loss); a preview input | counterfactual |
    # anomaly map of a validation case after the last epoch, as PNG and GIF
    assert "New best validation loss: " in log and "pseudo dice" not in log.lower()
    assert sorted(p.name for p in (fold / "previews").iterdir()) == ["epoch_0000.gif", "epoch_0000.png"]
    import imageio.v3 as iio

    assert iio.imread(fold / "previews" / "epoch_0000.png").shape == (32, 3 * 32)
    model = model_id(TRAINER, "nnugenPlans", "3d_fullres", 0)
    record = ThresholdRecord.load(fold / "threshold.json", model)
    assert record.rule == "best_dice" and np.isfinite(record.threshold)

    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    weights = checkpoint["network_weights"]
    assert bool(weights["threshold_chosen"]) and float(weights["threshold"]) == pytest.approx(record.threshold)
    assert checkpoint["current_epoch"] == 1 and checkpoint["trainer_name"] == TRAINER

    summary = json.loads((fold / "validation" / "anomaly_summary.json").read_text())
    assert sorted(summary["lesion_cases"]) == cases["lesion"][1:] and summary["healthy_cases"] == cases["healthy"][5:]
    for key in ("pixel_auprc", "pixel_auprc_per_volume_mean", "dice_at_threshold", "image_auroc"):
        assert 0 <= summary[key] <= 1, key
    assert summary["threshold"] == pytest.approx(record.threshold)
    # the erosion of the map's region, chosen with the threshold (planned search 0..4 for a 32^3 patch), is in the
    # model and the summary, and the log names the Dice of every width tried
    plans = json.loads((fold.parent / "plans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["nnugen"]["tasks"]["anomaly"]["anomaly"]["erode_search"] == 4
    assert int(weights["erosion"]) == summary["erode_region"] in range(5)
    assert f"erosion of the map's region chosen on validation: {summary['erode_region']} voxels (best Dice for 0..4:" \
        in log
    assert (fold / "validation" / "summary.json").is_file()  # nnU-Net's own, from the segmentations at the threshold
    assert len(list((fold / "validation").glob("*.nii.gz"))) == 3

    # a threshold chosen for another model is refused
    with pytest.raises(ValueError, match="threshold file from another model"):
        ThresholdRecord.load(fold / "threshold.json", model_id(TRAINER, "nnugenPlans", "3d_fullres", 1))


def test_nnunet_predict_writes_lesion_segmentations_with_the_input_geometry(anomaly_run, tmp_path):
    import SimpleITK as sitk

    root, env, _ = anomaly_run
    images = root / "raw" / FOLDER / "imagesTs"
    out = tmp_path / "predicted"
    run([cli("nnUNetv2_predict"), "-d", str(DATASET_ID), "-c", "3d_fullres", "-f", "0", "-tr", TRAINER, "-p",
         "nnugenPlans", "-i", str(images), "-o", str(out), "-device", "cpu", "--disable_tta", "-npp", "0", "-nps",
         "0"], env)
    written = sorted(out.glob("*.nii.gz"))
    assert [p.name for p in written] == sorted(p.name.replace("_0000", "") for p in images.glob("*.nii.gz"))
    for path in written:
        prediction = sitk.ReadImage(str(path))
        source = sitk.ReadImage(str(images / path.name.replace(".nii.gz", "_0000.nii.gz")))
        assert prediction.GetSize() == source.GetSize()
        assert np.allclose(prediction.GetSpacing(), source.GetSpacing())
        assert np.allclose(prediction.GetOrigin(), source.GetOrigin())
        assert np.allclose(prediction.GetDirection(), source.GetDirection())
        assert set(np.unique(sitk.GetArrayFromImage(prediction))) <= {0, 1}


def _same_geometry(image, source) -> None:
    assert image.GetSize() == source.GetSize()
    assert np.allclose(image.GetSpacing(), source.GetSpacing())
    assert np.allclose(image.GetOrigin(), source.GetOrigin())
    assert np.allclose(image.GetDirection(), source.GetDirection())


def test_nnugen_predict_writes_anomaly_maps_and_counterfactuals_with_the_case_geometry(anomaly_run, tmp_path):
    import SimpleITK as sitk

    from nnugen.anomaly import ThresholdRecord
    from nnugen.folders.model_folder import model_id

    root, env, _ = anomaly_run
    images, fold = root / "raw" / FOLDER / "imagesTs", _fold(root)
    record = ThresholdRecord.load(fold / "threshold.json", model_id(TRAINER, "nnugenPlans", "3d_fullres", 0))
    out = tmp_path / "maps"
    run([cli("nnugen_predict"), "-d", str(DATASET_ID), "-c", "3d", "-f", "0", "-tr", TRAINER, "-i", str(images), "-o",
         str(out), "-device", "cpu", "--ensemble-size", "2", "--seed", "3", "--strengths", "0.25", "0.5",
         "--threshold-file", str(fold / "threshold.json"), "-npp", "0", "-nps", "0"], env)
    used = json.loads((out / "nnugen_predict_args.json").read_text())["sampler_used"]
    assert used["anomaly"]["strengths"] == [0.25, 0.5] and used["sampler"]["seeds"] == 2
    for source_file in sorted(images.glob("*_0000.nii.gz")):
        case = source_file.name.replace("_0000.nii.gz", "")
        source = sitk.ReadImage(str(source_file))
        outputs = {suffix: sitk.ReadImage(str(out / f"{case}{suffix}.nii.gz"))
                   for suffix in ("", "_anomaly", "_anomaly_variance", "_counterfactual")}
        for image in outputs.values():
            _same_geometry(image, source)
        arrays = {suffix: sitk.GetArrayFromImage(image) for suffix, image in outputs.items()}
        anomaly, variance, healthy = arrays["_anomaly"], arrays["_anomaly_variance"], arrays["_counterfactual"]
        assert anomaly.dtype == np.float32 and np.isfinite(anomaly).all() and anomaly.min() >= 0 < anomaly.max()
        assert variance.min() >= 0 and variance.max() > 0  # two seeds disagree somewhere
        # the lesion segmentation is the map above the threshold (minus small components), as nnUNetv2_predict's
        assert (anomaly[arrays[""] == 1] > record.threshold - 1e-2).all()
        # the counterfactual is in the input's units (hundreds here, not nnU-Net's z-scores), and follows the anatomy
        # even after two training iterations
        original = sitk.GetArrayFromImage(source)
        assert np.corrcoef(healthy.ravel(), original.ravel())[0, 1] > 0.5
        assert abs(healthy.mean() - original.mean()) < 0.5 * original.std()
        assert 0.5 < healthy.std() / original.std() < 2


@pytest.mark.parametrize(("flags", "message"), [
    (["--strengths", "0.5", "1.5"], "--strengths: anomaly.strengths: strength 1.5 is outside (0, 1]"),
    (["--threshold-file", "OTHER"], "threshold file from another model"),
])
def test_nnugen_predict_bad_anomaly_input_is_one_line_and_nothing_written(anomaly_run, tmp_path, flags, message):
    from nnugen.anomaly import ThresholdRecord

    root, env, _ = anomaly_run
    if "OTHER" in flags:  # a record chosen for fold 1 of the same model
        other = tmp_path / "threshold.json"
        ThresholdRecord(0.1, "best_dice", 0.5, f"{TRAINER}__nnugenPlans__3d_fullres/fold_1").save(other)
        flags = [str(other) if f == "OTHER" else f for f in flags]
    out = tmp_path / "out"
    result = subprocess.run([cli("nnugen_predict"), "-d", str(DATASET_ID), "-c", "3d", "-f", "0", "-tr", TRAINER,
                             "-i", str(root / "raw" / FOLDER / "imagesTs"), "-o", str(out), "-device", "cpu", *flags],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("nnugen_predict: error: ") and message in lines[-1], lines[-1]
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_latent_mode_trains_on_the_autoencoder_latents_and_segments(anomaly_run, tmp_path):
    import SimpleITK as sitk

    root, _, _ = anomaly_run
    copy = tmp_path / "latent"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("results"))
    env = nnunet_environment(copy)
    autoencoder = ("autoencoder.training.epochs=1", "autoencoder.training.iterations_per_epoch=2",
                   "autoencoder.training.val_iterations_per_epoch=1", "autoencoder.autoencoder.adversarial_weight=0",
                   "autoencoder.autoencoder.perceptual_network=none", "anomaly.anomaly.space=latent")
    run([cli("nnugen_plan"), "-d", str(DATASET_ID), "--overwrite", *(a for s in TINY + autoencoder
                                                                      for a in ("--set", s))], env)
    for task in ("autoencoder", "anomaly"):
        run([cli("nnugen_train"), str(DATASET_ID), "0", "3d", "--task", task, "-device", "cpu", "--seed", "0"], env)
    log = next(_fold(copy).glob("training_log_*.txt")).read_text()
    assert "latent anomaly model on the frozen autoencoder in" in log and "latent scale factor" in log
    checkpoint = torch.load(_fold(copy) / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    weights = checkpoint["network_weights"]
    assert float(weights["latent_scale"]) > 0 and bool(weights["threshold_chosen"])
    assert any(key.startswith("autoencoder.") for key in weights)  # the frozen autoencoder travels in the checkpoint

    images, out = copy / "raw" / FOLDER / "imagesTs", tmp_path / "latent_maps"
    run([cli("nnugen_predict"), "-d", str(DATASET_ID), "-c", "3d", "-f", "0", "-tr", TRAINER, "-i", str(images), "-o",
         str(out), "-device", "cpu", "-npp", "0", "-nps", "0"], env)
    for source_file in sorted(images.glob("*_0000.nii.gz")):
        case = source_file.name.replace("_0000.nii.gz", "")
        for suffix in ("", "_anomaly", "_counterfactual"):
            _same_geometry(sitk.ReadImage(str(out / f"{case}{suffix}.nii.gz")), sitk.ReadImage(str(source_file)))


def test_val_chooses_the_threshold_again_with_the_fpr_rule(anomaly_run, tmp_path):
    from nnugen.anomaly import ThresholdRecord
    from nnugen.folders.model_folder import model_id

    root, _, _ = anomaly_run
    copy = tmp_path / "fpr"
    shutil.copytree(root, copy)
    env = nnunet_environment(copy)
    plans_file = copy / "preprocessed" / FOLDER / "nnugenPlans.json"  # a user's edit, as nnugen_plan --set writes it
    plans = json.loads(plans_file.read_text())
    plans["configurations"]["3d_fullres"]["nnugen"]["tasks"]["anomaly"]["anomaly"].update(threshold_rule="fpr",
                                                                                          target_fpr=0.05)
    plans_file.write_text(json.dumps(plans))
    run([cli("nnugen_train"), str(DATASET_ID), "0", "3d", "--task", "anomaly", "-device", "cpu", "--val"], env)
    fold = _fold(copy)
    record = ThresholdRecord.load(fold / "threshold.json", model_id(TRAINER, "nnugenPlans", "3d_fullres", 0))
    assert record.rule == "fpr" and record.value == pytest.approx(0.05)
    weights = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    assert float(weights["threshold"]) == pytest.approx(record.threshold)
    best_dice = ThresholdRecord.load(_fold(root) / "threshold.json", record.model)
    assert record.threshold != pytest.approx(best_dice.threshold)


def test_no_healthy_training_case_is_one_line_and_exit_1(anomaly_run, tmp_path):
    root, _, cases = anomaly_run
    copy = tmp_path / "no_healthy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("results"))
    (copy / "raw" / FOLDER / "healthy_cases.txt").unlink()  # the labels decide: every training case has a lesion
    _split(copy, cases["lesion"], cases["healthy"][:1])
    result = subprocess.run([cli("nnugen_train"), str(DATASET_ID), "0", "3d", "--task", "anomaly", "-device", "cpu"],
                            env=nnunet_environment(copy), capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnugen_train: error: no healthy training case in fold 0")
    # refused before nnU-Net's run starts: no training log, no model folder
    assert not [p for p in (copy / "results").rglob("*") if p.is_file()]
