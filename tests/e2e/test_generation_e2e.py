"""The generative trainers through the real CLIs on the tiny 3D phantoms: NnugenDDPMTrainer (previews, EMA),
NnugenAutoencoderTrainer (weights-only export, PatchGAN after its warm-up), NnugenLDMTrainer (on that frozen
autoencoder), resume with --c, and the safety of the exported autoencoder file."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from e2e_helpers import cli, nnunet_environment, run

pytestmark = pytest.mark.slow

SHORT = ("training.epochs=1", "training.iterations_per_epoch=2", "training.val_iterations_per_epoch=1",
         "training.preview_every=1")
SMALL = ("denoiser.features_per_stage=[16,32,64,128]", "denoiser.attention_stages=[]")


def _sets(task: str, *settings: str) -> list[str]:
    return [a for s in settings for a in ("--set", f"{task}.{s}")]


@pytest.fixture(scope="module")
def generators(tiny3d, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    import shutil

    root = tmp_path_factory.mktemp("generators")
    shutil.copytree(tiny3d, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("results"))
    env = nnunet_environment(root)
    run([cli("nnugen_plan"), "-d", "901", *_sets("ddpm", *SHORT, *SMALL, "generation.preview_steps=2"),
         *_sets("autoencoder", *SHORT, "autoencoder.adversarial_warmup_iterations=1",
                "autoencoder.features_per_stage=[8,16,16]"),
         *_sets("ldm", *SHORT)], env)
    for task in ("ddpm", "autoencoder", "ldm"):
        run([cli("nnugen_train"), "901", "0", "3d", "--task", task, "-device", "cpu", "--seed", "0"], env)
    return root / "results" / "Dataset901_Tiny3D", env


def _fold(results: Path, trainer: str) -> Path:
    return results / f"{trainer}__nnugenPlans__3d_fullres" / "fold_0"


def test_ddpm_writes_checkpoints_previews_and_ema(generators):
    results, _ = generators
    fold = _fold(results, "NnugenDDPMTrainer")
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "progress.png").is_file()
    assert (fold / "previews" / "epoch_0000.png").is_file() and (fold / "previews" / "epoch_0000.gif").is_file()
    weights = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)["network_weights"]
    ema = {k: v for k, v in weights.items() if k.startswith("ema.")}
    assert ema, "the EMA weights are not in the checkpoint"
    trained = weights["denoiser." + next(iter(ema))[4:]]
    assert not torch.equal(ema[next(iter(ema))], trained) or trained.numel() == 0


def test_autoencoder_export_loads_weights_only_and_refuses_pickles(generators, tmp_path):
    from nnugen.models.autoencoder_files import CONFIG_FILE, WEIGHTS_FILE, load_autoencoder

    results, _ = generators
    fold = _fold(results, "NnugenAutoencoderTrainer")
    autoencoder, arguments = load_autoencoder(fold)
    assert arguments["kind"] == "kl" and autoencoder.latent_channels == arguments["latent_channels"]
    log = next(fold.glob("training_log_*.txt")).read_text()
    assert "perceptual loss:" in log

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    crafted = tmp_path / "crafted"
    crafted.mkdir()
    (crafted / CONFIG_FILE).write_text((fold / CONFIG_FILE).read_text())
    with open(crafted / WEIGHTS_FILE, "wb") as stream:
        pickle.dump({"weights": Exploit()}, stream)
    with pytest.raises(ValueError, match="refused to load"):
        load_autoencoder(crafted)
    assert not (tmp_path / "pwned").exists(), "unpickling ran code"


def test_ldm_trains_on_the_frozen_autoencoder(generators):
    results, _ = generators
    fold = _fold(results, "NnugenLDMTrainer")
    latent = json.loads((fold / "latent.json").read_text())
    assert latent["scale_factor"] > 0
    assert Path(latent["autoencoder_folder"]) == _fold(results, "NnugenAutoencoderTrainer")
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["nnugen_latent_scale_factor"] == pytest.approx(latent["scale_factor"])


def test_latent_model_samples_images_through_the_autoencoder(generators, tmp_path):
    import SimpleITK as sitk

    results, env = generators
    out = tmp_path / "ldm_samples"
    run([cli("nnugen_sample"), "901", "3d", "1", str(out), "--task", "ldm", "--steps", "2", "--size", "patch",
         "-device", "cpu"], env)
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "case_0000_0000.nii.gz")))
    assert image.shape == (32, 32, 32) and image.std() > 0
    assert json.loads((out / "sampling.json").read_text())["trainer"] == "NnugenLDMTrainer"


def test_autoencoder_resume_continues_where_it_stopped(generators):
    results, env = generators
    fold = _fold(results, "NnugenAutoencoderTrainer")
    run([cli("nnugen_plan"), "-d", "901", "--set", "autoencoder.training.epochs=2"], env)
    run([cli("nnugen_train"), "901", "0", "3d", "--task", "autoencoder", "-device", "cpu", "--c"], env)
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["current_epoch"] == 2
    assert len(checkpoint["logging"]["train_losses"]) == 2
    assert checkpoint["nnugen_iteration"] == 4, "the discriminator's schedule did not continue"
