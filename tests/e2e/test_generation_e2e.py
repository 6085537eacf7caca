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


@pytest.fixture(scope="module")
def generators(trained_generators3d) -> tuple[Path, dict[str, str]]:
    """The session's trained DDPM, autoencoder and latent model (conftest.py): results of dataset 901 and its env."""
    return trained_generators3d / "results" / "Dataset901_Tiny3D", nnunet_environment(trained_generators3d)


def _fold(results: Path, trainer: str) -> Path:
    return results / f"{trainer}__nnugenPlans__3d_fullres" / "fold_0"


def _assert_own_progress(fold: Path, losses: set[str]) -> str:
    """A generative fold's log names the best validation loss (never a "pseudo Dice", which would be minus the
    loss), progress.png is drawn from the task's ``losses`` (progress_losses.json), and the run's progress file says
    it finished; returns the log."""
    from nnugen.trainers.loss_curves import LOSSES_FILE
    from nnugen.trainers.training_progress import read_training_progress

    log = "\n".join(path.read_text() for path in sorted(fold.glob("training_log_*.txt")))
    assert "pseudo dice" not in log.lower(), log
    assert "New best validation loss: " in log
    assert (fold / "progress.png").read_bytes().startswith(b"\x89PNG")
    history = json.loads((fold / LOSSES_FILE).read_text())
    assert losses <= history.keys(), history
    progress = read_training_progress(fold)
    assert progress is not None and progress.finished and progress.steps_done == progress.steps_total
    return log


def test_ddpm_writes_checkpoints_previews_and_ema(generators):
    results, _ = generators
    fold = _fold(results, "NnugenDDPMTrainer")
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "progress.png").is_file()
    assert (fold / "previews" / "epoch_0000.png").is_file() and (fold / "previews" / "epoch_0000.gif").is_file()
    _assert_own_progress(fold, {"train/nonfinite_steps"})
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
    _assert_own_progress(fold, {"train/l1", "train/kl", "train/adversarial", "train/discriminator", "val/l1",
                                "val/psnr", "val/ssim"})
    # input | reconstruction, as PNG and as GIF through the slices
    assert (fold / "previews" / "epoch_0000.png").is_file() and (fold / "previews" / "epoch_0000.gif").is_file()

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
    from nnugen.folders.checkpoint_files import load_nnunet_checkpoint
    from nnugen.models.autoencoder_files import load_autoencoder

    results, _ = generators
    fold = _fold(results, "NnugenLDMTrainer")
    latent = json.loads((fold / "latent.json").read_text())
    assert latent["scale_factor"] > 0
    # relative to the latent model's fold folder, so a moved or installed nnUNet_results still finds it (issue 17)
    assert latent["autoencoder_folder"] == "../../NnugenAutoencoderTrainer__nnugenPlans__3d_fullres/fold_0"
    checkpoint = load_nnunet_checkpoint(str(fold / "checkpoint_final.pth"), torch.device("cpu"))  # weights only
    assert checkpoint["nnugen_latent_scale_factor"] == pytest.approx(latent["scale_factor"])
    # the checkpoint carries the frozen autoencoder: the exported weights and arguments, unchanged
    autoencoder, arguments = load_autoencoder(_fold(results, "NnugenAutoencoderTrainer"))
    assert checkpoint["nnugen_autoencoder"]["arguments"] == arguments
    carried = checkpoint["nnugen_autoencoder"]["weights"]
    assert carried.keys() == autoencoder.state_dict().keys()
    assert all(torch.equal(carried[k], v) for k, v in autoencoder.state_dict().items())
    _assert_own_progress(fold, {"train/nonfinite_steps"})
    assert (fold / "previews" / "epoch_0000.png").is_file() and (fold / "previews" / "epoch_0000.gif").is_file()


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
    history = json.loads((fold / "progress_losses.json").read_text())
    assert len(history["train/l1"]) == 2 and None not in history["train/l1"]  # epoch 0's value survived the resume


def test_two_processes_sample_the_latent_models_image_of_one(generators, tmp_path):
    """``torchrun ... nnugen_sample --task ldm --partition 1 2 1`` (issue 19): the partition cuts the latents (8 x 16 x
    8 for this 32 x 64 x 32 image, 3 latent windows along the cut axis), each rank decodes its own latent box, and
    rank 0 writes the image one process writes (``--partition 1 1 1``)."""
    import sys

    import numpy as np
    import SimpleITK as sitk
    from e2e_helpers import run_all

    _, env = generators

    def command(out: Path, partition: tuple[str, ...], processes: int) -> list[str]:
        sample = [cli("nnugen_sample"), "901", "3d", "1", str(out), "--task", "ldm", "--size", "32", "64", "32",
                  "--steps", "2", "--seed", "3", "-device", "cpu", "--no-progress", "--partition", *partition]
        if processes == 1:
            return sample
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                *sample]

    env = {**env, "OMP_NUM_THREADS": "1"}
    _, partitioned = run_all([(command(tmp_path / "one", ("1", "1", "1"), 1), env),
                              (command(tmp_path / "two", ("1", "2", "1"), 2), env)], timeout=600)
    assert "partitioned 1 x 2 x 1 over 2 process(es)" in partitioned.stdout
    one, two = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / name / "case_0000_0000.nii.gz")))
                for name in ("one", "two"))
    assert one.shape == (32, 64, 32) and one.std() > 0
    np.testing.assert_allclose(two, one, rtol=0, atol=1e-5 * float(np.abs(one).max()))
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
