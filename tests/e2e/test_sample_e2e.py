"""nnugen_sample end to end: a DDPM trained for 1 epoch x 2 iterations by the real ``nnugen_train --task ddpm``, then
cases written by the real ``nnugen_sample`` (subprocess) and by its Python API, checked for the dataset's geometry,
original intensity units, label values, repeatability, nnU-Net's integrity check of ``--as-dataset`` output, and
one-line errors that leave nothing written."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from e2e_helpers import cli, nnunet_environment, run

from nnugen.inference.sample_api import SampleRequest, sample
from nnugen.inference.sample_writing import ReferenceGeometry, SampleGeometry

pytestmark = pytest.mark.slow

MODEL = "NnugenDDPMTrainer__nnugenPlans__3d_fullres"
SAMPLE_ARGS = ("--steps", "2", "--seed", "0", "-device", "cpu")


@pytest.fixture(scope="module")
def ddpm_root(trained_generators3d, tmp_path_factory) -> Path:
    """A copy of tiny3d with the session's NnugenDDPMTrainer (joint image + label, 1 epoch x 2 iterations, a small
    denoiser: conftest.py's trained_generators3d) on fold 0, and no other model."""
    root = tmp_path_factory.mktemp("ddpm3d")
    shutil.copytree(trained_generators3d, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("results"))
    shutil.copytree(trained_generators3d / "results" / "Dataset901_Tiny3D" / MODEL,
                    root / "results" / "Dataset901_Tiny3D" / MODEL)
    assert (root / "results" / "Dataset901_Tiny3D" / MODEL / "fold_0" / "checkpoint_final.pth").is_file()
    return root


def _use_environment(monkeypatch, root: Path) -> None:
    for key, value in nnunet_environment(root).items():
        if key.startswith("nnUNet_"):
            monkeypatch.setenv(key, value)


def _read(path: Path) -> tuple[np.ndarray, sitk.Image]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def _plans(root: Path) -> dict:
    return json.loads((root / "results" / "Dataset901_Tiny3D" / MODEL / "plans.json").read_text())


def test_sample_writes_cases_in_the_datasets_units_and_geometry(ddpm_root, tmp_path, monkeypatch):
    out = tmp_path / "samples"
    run([cli("nnugen_sample"), "901", "3d", "2", str(out), "--size", "patch", "--progress", *SAMPLE_ARGS],
        nnunet_environment(ddpm_root))
    plans = _plans(ddpm_root)
    configuration = plans["configurations"]["3d_fullres"]
    backward = plans["transpose_backward"]
    spacing = tuple(reversed([configuration["spacing"][i] for i in backward]))
    shape = tuple(configuration["patch_size"][i] for i in backward)
    (reference_file, *_) = sorted((ddpm_root / "raw" / "Dataset901_Tiny3D" / "imagesTr").iterdir())
    _, reference = _read(reference_file)
    channel = configuration["nnugen"]["intensity"]["channels"][0]
    low, high = (channel[k] * channel["std"] + channel["mean"] for k in ("low", "high"))
    for case in ("case_0000", "case_0001"):
        image, itk = _read(out / f"{case}_0000.nii.gz")
        assert image.shape == shape and np.isfinite(image).all()
        assert low - 1e-3 <= image.min() and image.max() <= high + 1e-3 and image.max() > 1.0  # original units
        np.testing.assert_allclose(itk.GetSpacing(), spacing)
        np.testing.assert_allclose(itk.GetOrigin(), reference.GetOrigin())
        np.testing.assert_allclose(itk.GetDirection(), reference.GetDirection())
        label, label_itk = _read(out / f"{case}.nii.gz")
        assert label.shape == shape and np.issubdtype(label.dtype, np.integer)
        assert set(np.unique(label).tolist()) <= {0, 1, 2}
        np.testing.assert_allclose(label_itk.GetOrigin(), reference.GetOrigin())
        assert (out / "previews" / f"{case}.png").is_file() and (out / "previews" / f"{case}.gif").is_file()
    metadata = json.loads((out / "sampling.json").read_text())
    assert metadata["num_cases"] == 2 and metadata["seed"] == 0 and metadata["sampler"]["steps"] == 2
    assert metadata["checkpoint"].endswith("fold_0/checkpoint_final.pth")

    # the same seed through the Python API, into another folder: the same arrays
    _use_environment(monkeypatch, ddpm_root)
    again = tmp_path / "again"
    written = sample(SampleRequest(dataset="901", configuration="3d", num_cases=2, output_folder=again, steps=2,
                                   seed=0, size="patch", device="cpu"))
    assert again / "case_0001_0000.nii.gz" in written
    for name in ("case_0000_0000.nii.gz", "case_0001_0000.nii.gz", "case_0000.nii.gz", "case_0001.nii.gz"):
        np.testing.assert_array_equal(_read(again / name)[0], _read(out / name)[0])


def test_as_dataset_at_the_median_size_passes_nnunets_integrity_check(ddpm_root, tmp_path):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    from nnugen_planner.dataset_check import check_raw_dataset

    out = tmp_path / "synthetic"
    run([cli("nnugen_sample"), "901", "3d", "2", str(out), "--as-dataset", "Dataset950_Synth", *SAMPLE_ARGS],
        nnunet_environment(ddpm_root))
    dataset = out / "Dataset950_Synth"
    dataset_json = json.loads((dataset / "dataset.json").read_text())
    model_json = json.loads((ddpm_root / "results" / "Dataset901_Tiny3D" / MODEL / "dataset.json").read_text())
    assert dataset_json["numTraining"] == 2 and dataset_json["file_ending"] == ".nii.gz"
    assert dataset_json["labels"] == model_json["labels"]
    assert dataset_json["channel_names"] == model_json["channel_names"]
    plans = _plans(ddpm_root)
    median = plans["configurations"]["3d_fullres"]["median_image_size_in_voxels"]
    expected = tuple(int(round(median[i])) for i in plans["transpose_backward"])
    assert _read(dataset / "imagesTr" / "case_0000_0000.nii.gz")[0].shape == expected
    verify_dataset_integrity(str(dataset), 1)  # raises on any problem
    assert check_raw_dataset(dataset) == []  # nnugen's own check: no NaN / Inf, no truncated files


def test_parts_together_write_exactly_the_files_of_one_unsplit_run(ddpm_root, tmp_path, monkeypatch):
    from nnugen.entrypoints.sample import main as sample_main

    _use_environment(monkeypatch, ddpm_root)
    common = ["901", "3d", "3", "--size", "patch", "--as-dataset", "Dataset951_Parts", *SAMPLE_ARGS]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert sample_main([*common[:3], str(whole), *common[3:]]) == 0
    for part in ("1", "0"):  # the part that ends last writes dataset.json, whichever it is
        assert sample_main([*common[:3], str(split), *common[3:], "-num_parts", "2", "-part_id", part]) == 0
    assert sample_main([*common[:3], str(split), *common[3:], "-num_parts", "2", "-part_id", "0"]) == 1

    def files(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "sampling" not in p.name)

    images = [f for f in files(whole) if f.startswith("Dataset951_Parts/imagesTr/")]
    assert files(split) == files(whole) and len(images) == 3
    for name in files(whole):
        if name.endswith(".nii.gz"):
            np.testing.assert_array_equal(_read(split / name)[0], _read(whole / name)[0])
    assert json.loads((split / "Dataset951_Parts" / "dataset.json").read_text()) == \
        json.loads((whole / "Dataset951_Parts" / "dataset.json").read_text())
    parts = [json.loads((split / f"sampling_part{i}of2.json").read_text()) for i in (0, 1)]
    assert [c["name"] for c in parts[0]["cases"]] == ["case_0000", "case_0002"]
    assert [c["name"] for c in parts[1]["cases"]] == ["case_0001"]


def test_continue_finishes_an_interrupted_run_as_if_it_never_stopped(ddpm_root, tmp_path, monkeypatch, capsys):
    """A run stopped after case_0000, in the middle of case_0001 (its label map and previews written, its image a
    0-byte file, as an older nnugen left it on a full disk), and killed while writing case_0002 (a temporary left):
    ``--continue`` keeps case_0000's files untouched, removes the temporary, samples the other two (a file that does
    not read back is not done), and the folder then equals an uninterrupted run's. A different seed is refused, with
    nothing changed."""
    from nnugen.entrypoints.sample import main as sample_main

    _use_environment(monkeypatch, ddpm_root)
    args = ["--size", "patch", *SAMPLE_ARGS]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert sample_main(["901", "3d", "3", str(whole), *args]) == 0
    shutil.copytree(whole, resumed)
    for name in ("case_0002_0000.nii.gz", "case_0002.nii.gz", "previews/case_0002.png", "previews/case_0002.gif"):
        (resumed / name).unlink()
    (resumed / "case_0001_0000.nii.gz").write_bytes(b"")  # whatever is there of an unfinished case is redone
    torn = resumed / ".case_0002_0000.nii.gz.12345678.tmp.nii.gz"  # an older nnugen's name: stale once an hour old
    torn.write_bytes(b"")
    os.utime(torn, (0, 0))
    kept = {p: p.stat().st_mtime_ns for p in resumed.glob("case_0000*")}
    capsys.readouterr()

    other_seed = ["--size", "patch", "--steps", "2", "--seed", "1", "-device", "cpu", "--continue"]
    assert sample_main(["901", "3d", "3", str(resumed), *other_seed]) == 1
    assert "the earlier run used seed 0, this one 1" in capsys.readouterr().err
    assert not (resumed / "case_0002_0000.nii.gz").exists()

    assert sample_main(["901", "3d", "3", str(resumed), *args, "--continue"]) == 0
    assert "1 case(s) already complete, 2 to sample" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in resumed.glob("case_0000*")} == kept

    def files(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    assert files(resumed) == files(whole)
    for name in files(whole):
        if name.endswith(".nii.gz"):
            np.testing.assert_array_equal(_read(resumed / name)[0], _read(whole / name)[0])


def _fake_checkpoint_of_another_trainer(root: Path, ddpm_root: Path) -> None:
    """A model folder where nnugen_sample looks for a DDPM whose checkpoint names another trainer."""
    import torch

    source = ddpm_root / "results" / "Dataset901_Tiny3D" / MODEL
    target = root / "results" / "Dataset901_Tiny3D" / MODEL
    shutil.copytree(source, target)
    checkpoint = torch.load(target / "fold_0" / "checkpoint_final.pth", weights_only=False)  # nnU-Net's format
    checkpoint["trainer_name"] = "NnugenDiffSegTrainer"
    torch.save(checkpoint, target / "fold_0" / "checkpoint_final.pth")


@pytest.mark.parametrize("case, expected", [
    ("n_zero", "N = 0: generate at least 1 case"),
    ("not_empty", "is not empty; choose a new folder, pass --continue to finish an interrupted run in it, or "
                  "--overwrite"),
    ("continue_foreign", "holds files but no sampling.json: it is not a run of nnugen_sample to continue"),
    ("continue_and_overwrite", "--continue keeps the cases already written and --overwrite replaces them"),
    ("no_model", f"model folder .*{MODEL} does not exist; train it first"),
    ("no_checkpoint", "checkpoint_latest.pth does not exist; train it first"),
    ("ldm", "NnugenLDMTrainer__nnugenPlans__3d_fullres does not exist; train it first"),
    ("other_trainer", "was written by NnugenDiffSegTrainer, not NnugenDDPMTrainer"),
])
def test_bad_input_is_one_line_and_writes_nothing(case, expected, ddpm_root, fresh_results, tmp_path, monkeypatch,
                                                   capsys):
    from nnugen.entrypoints.sample import main as sample_main

    root = ddpm_root
    if case in ("no_model", "other_trainer"):
        root = fresh_results(ddpm_root)  # the preprocessed dataset without results
        if case == "other_trainer":
            _fake_checkpoint_of_another_trainer(root, ddpm_root)
    _use_environment(monkeypatch, root)
    out = tmp_path / "out"
    argv = ["901", "3d", "0" if case == "n_zero" else "1", str(out), *SAMPLE_ARGS]
    if case in ("not_empty", "continue_foreign", "continue_and_overwrite"):
        out.mkdir()
        (out / "mine.txt").write_text("keep")
    argv += {"no_checkpoint": ["-chk", "checkpoint_latest.pth"], "ldm": ["--task", "ldm"],
             "continue_foreign": ["--continue"], "continue_and_overwrite": ["--continue", "--overwrite"]}.get(case, [])
    assert sample_main(argv) == 1
    stderr = capsys.readouterr().err.strip().splitlines()
    assert len(stderr) == 1 and stderr[0].startswith("nnugen_sample: error: ")
    assert re.search(expected, stderr[0]), stderr[0]
    if out.exists():
        assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    else:
        assert case not in ("not_empty", "continue_foreign", "continue_and_overwrite")


@pytest.mark.parametrize("transpose_forward, spacing, dimension", [
    ((2, 0, 1), (3.0, 0.8, 1.2), 3),  # anisotropic: the coarse axis is moved first in nnU-Net's layout
    ((0, 1, 2), (999.0, 0.8, 1.2), 2),  # a 2D dataset: nnU-Net reads 2D files as (1, y, x)
])
def test_written_files_read_back_into_the_preprocessed_layout(transpose_forward, spacing, dimension, tmp_path):
    """nnU-Net's SimpleITKIO + transpose_forward applied to a written file give the sampled array and the plan's
    spacing back, and a label map written by nnugen_sample is accepted by --labels-from's reader."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    backward = tuple(int(i) for i in np.argsort(transpose_forward))
    shape = (5, 6, 7) if dimension == 3 else (6, 7)
    reference = ReferenceGeometry((1.0, 2.0, 3.0)[:dimension], tuple(np.eye(dimension).flatten()), dimension, "test")
    plans = {"transpose_forward": list(transpose_forward), "transpose_backward": list(backward),
             "original_median_spacing_after_transp": list(spacing)}
    configuration = {"spacing": list(spacing if dimension == 3 else spacing[1:])}
    geometry = SampleGeometry.from_plans(plans, configuration, shape, reference)
    volume = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    geometry.write_image(volume, tmp_path / "x_0000.nii.gz", ".nii.gz")
    label = (volume > 0).astype(np.int64)
    geometry.write_label(label, tmp_path / "x.nii.gz", ".nii.gz")
    data, properties = SimpleITKIO().read_images([str(tmp_path / "x_0000.nii.gz")])
    back = data[0].transpose(transpose_forward)
    np.testing.assert_array_equal(back if dimension == 3 else back[0], volume)
    read_spacing = [properties["spacing"][i] for i in transpose_forward]
    np.testing.assert_allclose(read_spacing[3 - dimension:], spacing[3 - dimension:])
    np.testing.assert_array_equal(geometry.read_label(tmp_path / "x.nii.gz"), label)
    assert _read(tmp_path / "x.nii.gz")[0].shape == geometry.file_shape
