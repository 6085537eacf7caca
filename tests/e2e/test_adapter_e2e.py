"""Label-adapter generation end to end on the tiny 2D phantoms, through the real CLIs: an image-only DDPM trained by
``nnugen_train --task ddpm`` (the base, exported weights-only), a T2I-style adapter trained on it by
``nnugen_train --task adapter`` with the base frozen, and images sampled for given label maps by
``nnugen_sample --task adapter --labels-from DIR``; then the one-line errors for a missing base and for label maps
that do not fit."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from e2e_helpers import cli, nnunet_environment, run

pytestmark = pytest.mark.slow

DDPM = ("training.epochs=1", "training.iterations_per_epoch=3", "training.val_iterations_per_epoch=1",
        "memory.batch_size=2", "generation.mode=image", "generation.preview_steps=2", "generation.guidance_scale=2.0")
RESULTS = "Dataset902_Tiny2D"


@pytest.fixture(scope="module")
def adapter_root(tiny2d, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("adapter2d")
    shutil.copytree(tiny2d, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("results"))
    env = nnunet_environment(root)
    run([cli("nnugen_plan"), "-d", "902", *(a for s in DDPM for a in ("--set", f"ddpm.{s}"))], env)
    for task in ("ddpm", "adapter"):
        run([cli("nnugen_train"), "902", "0", "2d", "--task", task, "-device", "cpu", "--seed", "0"], env)
    return root


def _fold(root: Path, trainer: str, fold: int = 0) -> Path:
    return root / "results" / RESULTS / f"{trainer}__nnugenPlans__2d" / f"fold_{fold}"


def _labels(root: Path, target: Path, count: int = 2) -> Path:
    target.mkdir()
    for path in sorted((root / "raw" / RESULTS / "labelsTr").glob("*.nii.gz"))[:count]:
        shutil.copy(path, target / path.name)
    return target


def test_adapter_trains_on_the_frozen_base_and_samples_images_for_given_label_maps(adapter_root, tmp_path):
    base = _fold(adapter_root, "NnugenDDPMTrainer")
    adapter = _fold(adapter_root, "NnugenDDPMTrainer_labelAdapter")
    exported = torch.load(base / "denoiser_weights.pt", map_location="cpu", weights_only=True)
    assert json.loads((base / "denoiser.json").read_text())["mode"] == "image"
    weights = torch.load(adapter / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    for name, value in exported.items():  # the base stayed frozen: the adapter's model holds it unchanged
        assert torch.equal(weights[f"denoiser.{name}"], value), name
    outs = [v for k, v in weights.items() if k.startswith("adapter.") and ".out." in k]
    assert outs and any(torch.count_nonzero(v) > 0 for v in outs), "the zero-initialised adapter did not train"
    assert "label adapter on the frozen base DDPM" in next(adapter.glob("training_log_*.txt")).read_text()

    labels = _labels(adapter_root, tmp_path / "labels")
    out = tmp_path / "samples"
    run([cli("nnugen_sample"), "902", "2d", "2", str(out), "--task", "adapter", "--labels-from", str(labels),
         "--steps", "2", "--seed", "0", "-device", "cpu"], nnunet_environment(adapter_root))
    given = sorted(labels.iterdir())
    for k in range(2):
        image = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"case_{k:04d}_0000.nii.gz")))
        label = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"case_{k:04d}.nii.gz")))
        assert image.shape == label.shape and np.isfinite(image).all() and image.std() > 0
        np.testing.assert_array_equal(label, sitk.GetArrayFromImage(sitk.ReadImage(str(given[k]))))
    metadata = json.loads((out / "sampling.json").read_text())
    assert metadata["trainer"] == "NnugenDDPMTrainer_labelAdapter" and metadata["mode"] == "label_adapter"
    assert metadata["guidance_scale"] == 2.0


def _use_environment(monkeypatch, root: Path) -> None:
    for key, value in nnunet_environment(root).items():
        if key.startswith("nnUNet_"):
            monkeypatch.setenv(key, value)


def _one_line(capsys) -> str:
    stderr = capsys.readouterr().err.strip().splitlines()
    assert len(stderr) == 1, stderr
    return stderr[0]


def test_adapter_without_a_trained_base_is_one_line_and_writes_nothing(adapter_root, monkeypatch, capsys):
    from nnugen.entrypoints.train import main as train_main

    _use_environment(monkeypatch, adapter_root)
    assert train_main(["902", "1", "2d", "--task", "adapter", "-device", "cpu"]) == 1
    line = _one_line(capsys)
    assert re.search(r"NnugenDDPMTrainer__nnugenPlans__2d/fold_1 holds no exported DDPM .* train the base", line), line
    assert not _fold(adapter_root, "NnugenDDPMTrainer_labelAdapter", 1).exists()


@pytest.mark.parametrize("case, expected", [
    ("unknown_label", r"holds label value\(s\) \[7\] that are not in the dataset's labels \(0, 1, 2\)"),
    ("wrong_shape", r"array shape \(32, 32\), expected \(64, 64\)"),
    ("no_labels", r"mode label_adapter\); pass them with --labels-from DIR"),
])
def test_label_maps_that_do_not_fit_are_one_line_and_write_nothing(case, expected, adapter_root, tmp_path,
                                                                   monkeypatch, capsys):
    from nnugen.entrypoints.sample import main as sample_main

    _use_environment(monkeypatch, adapter_root)
    labels = _labels(adapter_root, tmp_path / "labels", count=1)
    (path,) = labels.iterdir()
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    if case == "unknown_label":
        array[0, 0] = 7
    replaced = sitk.GetImageFromArray(array[::2, ::2] if case == "wrong_shape" else array)
    sitk.WriteImage(replaced, str(path))
    out = tmp_path / "out"
    argv = ["902", "2d", "1", str(out), "--task", "adapter", "-device", "cpu"]
    argv += [] if case == "no_labels" else ["--labels-from", str(labels)]
    assert sample_main(argv) == 1
    assert re.search(expected, _one_line(capsys))
    assert not out.exists()
