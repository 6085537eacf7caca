"""``fold_X/validation/summary.json`` of a generative model. ``nnUNetv2_export_model_to_zip`` copies that file of
every exported fold and fails without it; a generative model segments nothing, so nnU-Net's statistics do not apply.
Its file says so, with the validation loss of the last epoch (the mean training loss on validation patches), and has
no ``foreground_mean``, so nothing mistakes it for a segmentation result. Torch-free."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from nnugen.atomic_files import atomic_write_json

SUMMARY = Path("validation") / "summary.json"


def write_generative_summary(fold_folder: str | os.PathLike, trainer: str, val_losses: Sequence[float]) -> Path:
    """Write ``fold_folder/validation/summary.json`` for ``trainer``'s generative model; ``val_losses`` per epoch
    (nnU-Net's logger's ``val_losses``; the last finite one is recorded, None when there is none)."""
    finite = [float(loss) for loss in val_losses if math.isfinite(float(loss))]
    target = Path(fold_folder) / SUMMARY
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(target, {
        "trainer": trainer,
        "generative_model": True,
        "validation_loss_last_epoch": finite[-1] if finite else None,
        "note": "a generative model segments nothing, so nnU-Net's segmentation statistics do not apply; the loss is "
                "the training loss on validation patches (training_log_*.txt, progress.png)",
    })
    return target
