"""Models that travel (issue 17, part 4), through nnU-Net's own sharing CLIs: the session's trained models are exported
with ``nnUNetv2_export_model_to_zip``, installed with ``nnUNetv2_install_pretrained_model_from_zip`` into a fresh
``nnUNet_results`` of "another machine" (no raw or preprocessed data there, the training folders out of reach), then
that results folder is moved with a plain rename. The latent model (with its autoencoder, installed without the
autoencoder's model folder), the DDPM and the diffusion segmenter make identical samples / segmentations in all three
places, and no file of the zips (nor any value in the checkpoints) names a folder of the training machine."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from e2e_helpers import cli, nnunet_environment, run, run_all

pytestmark = pytest.mark.slow


def _export(dataset: str, configuration: str, trainer: str, target: Path) -> list[str]:
    """The command that exports fold 0 of a model to the zip ``target``."""
    return [cli("nnUNetv2_export_model_to_zip"), "-d", dataset, "-o", str(target), "-c", configuration, "-tr", trainer,
            "-p", "nnugenPlans", "-f", "0"]


def _install(archive: Path, root: Path) -> tuple[list[str], dict[str, str]]:
    """The command and env that install ``archive`` into ``root/results`` of a machine without raw or preprocessed
    data."""
    return [cli("nnUNetv2_install_pretrained_model_from_zip"), str(archive)], nnunet_environment(root)


def _strings(value):
    """Every string in a loaded checkpoint (keys and values; tensors are numbers)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def _assert_names_no_folder_of(archive: Path, root: Path, scratch: Path) -> list[str]:
    """No file in ``archive`` holds ``root`` (the training machine's nnU-Net folders, as given and resolved), and no
    string in its checkpoints (loaded weights-only) does; returns the archive's names."""
    from nnugen.folders.checkpoint_files import load_nnunet_checkpoint

    forms = {str(root), str(root.resolve())}
    with zipfile.ZipFile(archive) as opened:
        names = opened.namelist()
        for name in names:
            data = opened.read(name)
            for form in forms:
                assert form.encode() not in data, f"{name} in {archive.name} names {form}"
            if name.endswith(".pth"):
                (scratch / "checkpoint.pth").write_bytes(data)
                checkpoint = load_nnunet_checkpoint(str(scratch / "checkpoint.pth"), torch.device("cpu"))
                leaked = [s for s in _strings(checkpoint) if any(form in s for form in forms)]
                assert not leaked, f"{name}: {leaked[0][:200]}"
    return names


def _image(path: Path) -> tuple[np.ndarray, tuple]:
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), (image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def _assert_same_images(folder: Path, reference: Path, with_data: bool = True) -> None:
    """The same images, voxel for voxel, with the same spacing; also the same origin and direction ``with_data``
    (a sample takes them from the dataset's images, which a machine without the data lacks: identity at 0 there)."""
    names = sorted(p.name for p in reference.glob("*.nii.gz"))
    assert names and sorted(p.name for p in folder.glob("*.nii.gz")) == names
    for name in names:
        array, geometry = _image(folder / name)
        expected, expected_geometry = _image(reference / name)
        np.testing.assert_array_equal(array, expected)
        assert geometry == expected_geometry if with_data else geometry[0] == expected_geometry[0]


def _sample(env: dict[str, str], task: str, out: Path) -> tuple[list[str], dict[str, str]]:
    """The command and env that sample one case with ``task``'s model into ``out``."""
    return [cli("nnugen_sample"), "901", "3d", "1", str(out), "--task", task, "--steps", "2", "--size", "patch",
            "-device", "cpu", "--seed", "5"], env


# Independent calls run side by side (run_all); a call that reads what another writes runs after it. Installs into one
# results folder run one after the other (each creates the dataset's folder).


def test_generators_sample_the_same_after_export_install_and_move(trained_generators3d, tmp_path):
    from nnugen.models.autoencoder_files import load_autoencoder

    root = trained_generators3d
    env = nnunet_environment(root)
    archives = {trainer: tmp_path / f"{trainer}.zip"
                for trainer in ("NnugenLDMTrainer", "NnugenDDPMTrainer", "NnugenAutoencoderTrainer")}
    run_all([(_export("901", "3d_fullres", trainer, archive), env) for trainer, archive in archives.items()])
    for archive in archives.values():
        names = _assert_names_no_folder_of(archive, root, tmp_path)
        assert "Dataset901_Tiny3D/" + archive.stem + "__nnugenPlans__3d_fullres/fold_0/checkpoint_final.pth" in names
    originals = {task: tmp_path / f"original_{task}" for task in ("ldm", "ddpm")}

    # another machine: the latent model and the DDPM installed, not the autoencoder's model folder
    other = tmp_path / "other_machine"
    other_env = nnunet_environment(other)
    run_all([*(_sample(env, task, out) for task, out in originals.items()),
             _install(archives["NnugenLDMTrainer"], other)])
    run(*_install(archives["NnugenDDPMTrainer"], other))
    assert not (other / "results" / "Dataset901_Tiny3D" / "NnugenAutoencoderTrainer__nnugenPlans__3d_fullres").exists()
    samples = {task: tmp_path / f"installed_{task}" for task in originals}
    run_all([_sample(other_env, task, out) for task, out in samples.items()])
    for task in originals:
        _assert_same_images(samples[task], originals[task], False)

    # the installed results folder moved with a plain rename
    moved = tmp_path / "moved_machine"
    (moved / "results").parent.mkdir()
    shutil.move(other / "results", moved / "results")
    run(*_sample(nnunet_environment(moved), "ldm", tmp_path / "moved_ldm"))
    _assert_same_images(tmp_path / "moved_ldm", originals["ldm"], False)

    # the autoencoder's model folder travels too: its checkpoint names the autoencoder's arguments
    run(*_install(archives["NnugenAutoencoderTrainer"], moved))
    fold = "Dataset901_Tiny3D/NnugenAutoencoderTrainer__nnugenPlans__3d_fullres/fold_0"
    installed, arguments = load_autoencoder(moved / "results" / fold)
    trained, trained_arguments = load_autoencoder(root / "results" / fold)
    assert arguments == trained_arguments
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in installed.state_dict().items())


def test_diffusion_segmenter_predicts_the_same_after_export_install_and_move(trained_diffseg2d, tmp_path):
    root = trained_diffseg2d.parents[2]
    images = root / "raw" / "Dataset902_Tiny2D" / "imagesTs"
    env = nnunet_environment(root)
    archive = tmp_path / "diffseg.zip"

    def predict(environment: dict[str, str], out: Path) -> tuple[list[str], dict[str, str]]:
        return [cli("nnUNetv2_predict"), "-d", "902", "-c", "2d", "-f", "0", "-tr", "NnugenDiffSegTrainer",
                "-p", "nnugenPlans", "-i", str(images), "-o", str(out), "-device", "cpu", "--disable_tta",
                "-npp", "0", "-nps", "0"], environment

    original, installed, moved_out = tmp_path / "original", tmp_path / "installed", tmp_path / "moved"
    run_all([(_export("902", "2d", "NnugenDiffSegTrainer", archive), env), predict(env, original)])
    names = _assert_names_no_folder_of(archive, root, tmp_path)
    assert any(name.endswith("fold_0/debug.json") for name in names)

    other = tmp_path / "other_machine"
    run(*_install(archive, other))
    run(*predict(nnunet_environment(other), installed))
    _assert_same_images(installed, original)
    moved = tmp_path / "moved_machine"
    moved.mkdir()
    shutil.move(other / "results", moved / "results")
    run(*predict(nnunet_environment(moved), moved_out))
    _assert_same_images(moved_out, original)
