"""nnugen's extra metrics reach nnU-Net's loggers: nnU-Net's training loop (``run_training``, in this process) of the
diffusion segmentation and autoencoder trainers writes the epoch means of the loss parts and of the skipped
non-finite steps to the training log, and, with ``nnUNet_wandb_enabled=1``, to nnU-Net's W&B logger. wandb is not
installed here: a stand-in module records what nnU-Net's ``WandbLogger`` sends it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from e2e_helpers import in_process_trainer, nnunet_environment, planned_copy

pytestmark = pytest.mark.slow

SETTINGS = ("training.epochs=1", "training.iterations_per_epoch=2", "training.val_iterations_per_epoch=1")
EXTRA = {"segmentation": ("segmentation.training.val_sampling_steps=2", "segmentation.sampler.steps=2"),
         "autoencoder": ("autoencoder.autoencoder.adversarial_warmup_iterations=0",
                         "autoencoder.autoencoder.perceptual_network=none")}


class StandInRun:
    """What nnU-Net's WandbLogger uses of a wandb run."""

    def __init__(self):
        self.config = SimpleNamespace(update=lambda values: None)
        self.summary: dict = {}
        self.step = 0
        self.logged: list[tuple[str, float, int]] = []

    def log(self, values: dict, step: int) -> None:
        self.logged.extend((key, value, step) for key, value in values.items())


@pytest.fixture(scope="module")
def planned2d(tiny2d, tmp_path_factory) -> Path:
    """A copy of dataset 902 planned by nnugen_plan once for this module; each test works on a copy of it."""
    root = tmp_path_factory.mktemp("tracking2d")
    sets = [f"{task}.{s}" for task in EXTRA for s in SETTINGS] + [s for extra in EXTRA.values() for s in extra]
    planned_copy(tiny2d, root, 902, tuple(sets))
    return root


@pytest.fixture()
def training(planned2d, fresh_results, monkeypatch):
    root = fresh_results(planned2d)
    env = nnunet_environment(root)
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_n_proc_DA"):
        monkeypatch.setenv(key, env[key])
    monkeypatch.delenv("nnUNet_wandb_enabled", raising=False)
    folder = root / "preprocessed" / "Dataset902_Tiny2D"

    def train(trainer_class):
        """One epoch of nnU-Net's training loop; returns (the training log's text, the trainer)."""
        trainer = in_process_trainer(trainer_class, folder, "2d")
        trainer.run_training()
        return open(trainer.log_file).read(), trainer

    return train


@pytest.fixture()
def stand_in_wandb(monkeypatch):
    from nnunetv2.training.logging import nnunet_logger

    runs: list[tuple[dict, StandInRun]] = []

    def init(**options):
        runs.append((options, StandInRun()))
        return runs[-1][1]

    image = lambda path, caption=None: ("image", path, caption)  # noqa: E731 - wandb.Image: what it was given
    monkeypatch.setattr(nnunet_logger, "wandb", SimpleNamespace(init=init, Image=image))
    monkeypatch.setenv("nnUNet_wandb_enabled", "1")
    monkeypatch.setenv("nnUNet_wandb_mode", "offline")
    return runs


def _logged_keys(runs) -> set[str]:
    ((_, wandb_run),) = runs
    return {key for key, _, _ in wandb_run.logged}


def test_diffusion_loss_parts_go_to_the_training_log_by_default(training):
    from nnugen.trainers.nnugen_diffseg_trainer import NnugenDiffSegTrainer

    log, trainer = training(NnugenDiffSegTrainer)
    assert trainer.logger.loggers == []  # local logging only
    (line,) = [line for line in log.splitlines() if "nnugen metrics:" in line]
    assert "train/diffusion_dice_ce" in line and "train/nonfinite_steps 0" in line
    losses = trainer.logger.get_value("train_losses", step=None)
    assert f"train/diffusion_dice_ce {losses[0]:.5g}" in line  # the only part: it is the whole loss


def test_diffusion_loss_parts_reach_wandb(training, stand_in_wandb):
    from nnugen.trainers.nnugen_diffseg_trainer import NnugenDiffSegTrainer

    training(NnugenDiffSegTrainer)
    ((options, _),) = stand_in_wandb
    assert options["mode"] == "offline"
    keys = _logged_keys(stand_in_wandb)
    assert {"train/diffusion_dice_ce", "train/nonfinite_steps", "train_losses"} <= keys


def test_autoencoder_loss_terms_reach_wandb(training, stand_in_wandb):
    from nnugen.trainers.nnugen_autoencoder_trainer import NnugenAutoencoderTrainer

    log, _ = training(NnugenAutoencoderTrainer)
    keys = _logged_keys(stand_in_wandb)
    assert {"train/l1", "train/kl", "train/adversarial", "train/discriminator", "train/nonfinite_steps",
            "val/l1", "val/kl"} <= keys
    assert "train/adversarial" in log
    assert {"val/psnr", "val/ssim"} <= keys  # reconstruction quality while it trains
    # the preview of the last epoch (input | reconstruction) as an image at that epoch's step
    ((_, wandb_run),) = stand_in_wandb
    ((value, step),) = [(value, step) for key, value, step in wandb_run.logged if key == "preview"]
    assert value[0] == "image" and value[1].endswith("previews/epoch_0000.png") and step == 0
