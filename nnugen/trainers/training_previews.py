"""Previews during training (evaluation/previews.py draws them): when they are due, the case they show, where they
are written, and W&B.

Every task that produces images writes ``fold_F/previews/epoch_EEEE.png`` (+ ``.gif`` in 3D) every
``training.preview_every`` epochs and after the last epoch, on rank 0: a sample of the DDPM and of the latent model,
the autoencoder's input | reconstruction, the anomaly model's input | counterfactual | anomaly map, and diffusion
segmentation's image | reference | prediction | entropy. The input is the first case of the last validation batch,
so a preview draws no batch of its own from nnU-Net's loaders (a seeded run's batches stay the same). With
``nnUNet_wandb_enabled=1`` the PNG goes to W&B as ``preview``, a ``wandb.Image`` at the epoch's step.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

PREVIEW_FOLDER = "previews"
WANDB_KEY = "preview"


def preview_due(epoch: int, every: int, epochs: int) -> bool:
    """Previews after epoch ``epoch`` (0-based): every ``every`` epochs and after the last one."""
    return (epoch + 1) % every == 0 or epoch == epochs - 1


def preview_path(output_folder: str | Path, epoch: int) -> Path:
    return Path(output_folder) / PREVIEW_FOLDER / f"epoch_{epoch:04d}.png"


def first_case(batch: dict) -> dict:
    """The first case of a batch of nnU-Net's loader, on the CPU: ``data`` (1, C, *spatial) and ``target``
    (1, 1, *spatial; the full-resolution one under deep supervision)."""
    target = batch["target"][0] if isinstance(batch["target"], list) else batch["target"]
    return {"data": torch.as_tensor(batch["data"][:1]).detach().cpu(),
            "target": torch.as_tensor(target[:1]).detach().cpu()}


def send_to_wandb(loggers: Iterable, files: Iterable[Path], epoch: int) -> None:
    """The PNG among ``files`` to every W&B logger among nnU-Net's ``loggers``, as the image ``preview`` at step
    ``epoch`` (nnU-Net's WandbLogger steps by epoch too). wandb is the module nnU-Net's logger imported."""
    from nnunetv2.training.logging import nnunet_logger

    pngs = [str(f) for f in files if Path(f).suffix == ".png"]
    for logger in loggers:
        if isinstance(logger, nnunet_logger.WandbLogger) and pngs:
            logger.run.log({WANDB_KEY: nnunet_logger.wandb.Image(pngs[0], caption=f"epoch {epoch}")}, step=epoch)
