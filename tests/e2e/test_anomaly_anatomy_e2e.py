"""Anatomy-mask conditioning of counterfactual anomaly segmentation through the real CLIs, on 32^3 synthetic-lesion
phantoms whose body mask is a second input channel (``noNorm``): nnugen_plan --set
anomaly.anomaly.condition_channel=noNorm, nnugen_train --task anomaly (the base: the image channel alone, exported
weights-only), nnugen_train --task anomaly_adapter (a T2I-Adapter on the frozen base), then the real nnUNetv2_predict
and nnugen_predict with the adapter; the map is 0 outside the mask. Bad settings and a missing base are one-line
errors that write nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from e2e_helpers import cli, nnunet_environment, run, run_all
from test_anomaly_e2e import TINY

pytestmark = pytest.mark.slow

DATASET_ID, NAME = 934, "AnatomyLesions"
FOLDER = f"Dataset{DATASET_ID:03d}_{NAME}"
BASE, ADAPTER = "NnugenAnomalyTrainer", "NnugenAnomalyTrainer_anatomyAdapter"
# mask_to_body off: only the anatomy mask can make the map 0 outside it
ANATOMY = ("anomaly.anomaly.condition_channel=noNorm", "anomaly.anomaly.mask_to_body=false")


def _sets(settings: tuple[str, ...]) -> list[str]:
    return [a for s in settings for a in ("--set", s)]


@pytest.fixture(scope="module")
def anatomy_run(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    from nnugen.demo.lesion_dataset import write_lesion_dataset
    from nnugen.demo.phantom import PhantomSpec

    root = tmp_path_factory.mktemp("anatomy")
    raw = write_lesion_dataset(root / "raw", DATASET_ID, NAME, n_healthy_train=3, n_val_lesion=2, n_test_lesion=1,
                               seed=0, spec=PhantomSpec(shape=(32, 32, 32)), anatomy_channel=True)
    lesions = json.loads((raw / "dataset.json").read_text())["nnugen_lesions"]
    env = nnunet_environment(root)
    run([cli("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "2", "-npfp", "2"],
        env)
    healthy, lesion_cases = lesions["healthy_cases"], sorted(lesions["lesion_families"])[:2]  # imagesTr
    split = [{"train": healthy, "val": lesion_cases}]  # one fold of our own: the threshold from the lesion cases
    (root / "preprocessed" / FOLDER / "splits_final.json").write_text(json.dumps(split))
    run([cli("nnugen_plan"), "-d", str(DATASET_ID), *_sets(TINY + ANATOMY)], env)
    for task in ("anomaly", "anomaly_adapter"):
        run([cli("nnugen_train"), str(DATASET_ID), "0", "3d", "--task", task, "-device", "cpu", "--seed", "0"], env)
    return root, env


def _fold(root: Path, trainer: str) -> Path:
    return root / "results" / FOLDER / f"{trainer}__nnugenPlans__3d_fullres" / "fold_0"


def test_the_adapter_trains_on_the_frozen_base_which_models_the_image_channel_alone(anatomy_run):
    root, _ = anatomy_run
    base, adapter = _fold(root, BASE), _fold(root, ADAPTER)
    description = json.loads((base / "denoiser.json").read_text())
    assert description["mode"] == "image" and description["image_channels"] == 1  # the mask is not modelled
    exported = torch.load(base / "denoiser_weights.pt", map_location="cpu", weights_only=True)
    assert int(torch.load(base / "checkpoint_final.pth", map_location="cpu",
                          weights_only=False)["network_weights"]["condition_index"]) == 1

    checkpoint = torch.load(adapter / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    weights = checkpoint["network_weights"]
    assert checkpoint["trainer_name"] == ADAPTER and int(weights["condition_index"]) == 1
    for name, value in exported.items():  # the base stayed frozen
        assert torch.equal(weights[f"generator.denoiser.{name}"], value), name
    outs = [v for k, v in weights.items() if k.startswith("generator.adapter.") and ".out." in k]
    assert outs and any(torch.count_nonzero(v) > 0 for v in outs), "the zero-initialised adapter did not train"
    assert bool(weights["threshold_chosen"]) and (adapter / "threshold.json").is_file()
    assert not (adapter / "denoiser.json").exists()  # an adapter is no base
    assert "anatomy adapter on the frozen anomaly denoiser in" in next(adapter.glob("training_log_*.txt")).read_text()


def _inputs(root: Path) -> tuple[Path, list[str]]:
    images = root / "raw" / FOLDER / "imagesTs"
    return images, sorted(p.name.replace("_0000.nii.gz", "") for p in images.glob("*_0000.nii.gz"))


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _same_geometry(path: Path, source: Path) -> None:
    image, reference = sitk.ReadImage(str(path)), sitk.ReadImage(str(source))
    assert image.GetSize() == reference.GetSize()
    assert np.allclose(image.GetSpacing(), reference.GetSpacing())
    assert np.allclose(image.GetOrigin(), reference.GetOrigin())
    assert np.allclose(image.GetDirection(), reference.GetDirection())


def test_nnunet_predict_and_nnugen_predict_use_the_adapter_and_score_only_inside_the_mask(anatomy_run, tmp_path):
    root, env = anatomy_run
    images, cases = _inputs(root)
    segmentations, maps = tmp_path / "segmentations", tmp_path / "maps"
    run_all([([cli("nnUNetv2_predict"), "-d", str(DATASET_ID), "-c", "3d_fullres", "-f", "0", "-tr", ADAPTER, "-p",
               "nnugenPlans", "-i", str(images), "-o", str(segmentations), "-device", "cpu", "--disable_tta", "-npp",
               "0", "-nps", "0"], env),
             ([cli("nnugen_predict"), "-d", str(DATASET_ID), "-c", "3d", "-f", "0", "-tr", ADAPTER, "-i", str(images),
               "-o", str(maps), "-device", "cpu", "--strengths", "0.25", "-npp", "0", "-nps", "0"], env)])
    assert cases
    for case in cases:
        image, mask_file = images / f"{case}_0000.nii.gz", images / f"{case}_0001.nii.gz"
        outside = _array(mask_file) < 0.5
        assert outside.any() and not outside.all()
        for path in (segmentations / f"{case}.nii.gz", maps / f"{case}.nii.gz", maps / f"{case}_anomaly.nii.gz",
                     maps / f"{case}_counterfactual.nii.gz"):
            _same_geometry(path, image)
        segmentation = _array(segmentations / f"{case}.nii.gz")
        assert set(np.unique(segmentation)) <= {0, 1} and not segmentation[outside].any()
        anomaly = _array(maps / f"{case}_anomaly.nii.gz")
        assert np.isfinite(anomaly).all() and anomaly[~outside].max() > 0
        assert np.abs(anomaly[outside]).max() == 0  # the map scores the anatomy only
        # one image channel, so one counterfactual file, in the input's units (hundreds, not z-scores)
        assert not (maps / f"{case}_counterfactual_0001.nii.gz").exists()
        healthy, original = _array(maps / f"{case}_counterfactual.nii.gz"), _array(image)
        assert np.corrcoef(healthy.ravel(), original.ravel())[0, 1] > 0.5


def _one_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_the_adapter_without_a_trained_base_is_one_line_and_writes_nothing(anatomy_run, tmp_path, monkeypatch,
                                                                         capsys):
    from nnugen.entrypoints.train import main as train_main

    root, _ = anatomy_run
    copy = tmp_path / "no_base"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("results"))
    for key, value in nnunet_environment(copy).items():
        if key.startswith("nnUNet_"):
            monkeypatch.setenv(key, value)
    assert train_main([str(DATASET_ID), "0", "3d", "--task", "anomaly_adapter", "-device", "cpu"]) == 1
    line = _one_line(capsys)
    assert line.startswith("nnugen_train: error: ") and f"{BASE}__nnugenPlans__3d_fullres/fold_0 holds no exported " \
        "anomaly model" in line and "nnugen_train ID FOLD CONFIG --task anomaly" in line, line
    assert not [p for p in (copy / "results").rglob("*") if p.is_file()]


@pytest.mark.parametrize(("setting", "message"), [
    ("anomaly.anomaly.condition_channel=cord", "'cord' is not exactly one channel of dataset.json (channels: T1, "
                                               "noNorm)"),
    ("anomaly.anomaly.condition_channel=T1", "nnU-Net normalises channel 'T1' with ZScoreNormalization"),
    ("anomaly.anomaly.space=latent", "an anatomy condition channel works in image space only"),
])
def test_bad_anatomy_settings_are_one_line_errors_of_nnugen_plan(anatomy_run, monkeypatch, capsys, setting, message):
    from nnugen.entrypoints.plan import main as plan_main

    root, env = anatomy_run
    for key, value in env.items():
        if key.startswith("nnUNet_"):
            monkeypatch.setenv(key, value)
    plans = root / "preprocessed" / FOLDER / "nnugenPlans.json"
    before = plans.read_bytes()
    assert plan_main(["-d", str(DATASET_ID), "--no-check", *_sets(TINY + ANATOMY + (setting,))]) == 1
    line = _one_line(capsys)
    assert line.startswith("nnugen_plan: error: ") and message in line, line
    assert plans.read_bytes() == before
