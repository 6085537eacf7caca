"""Make sure nnU-Net's trainer lookup sees nnugen's trainers. Installing nnugen already does this at start-up
(``nnugen_ext_trainer.pth``); nnugen's own CLIs call this too, so a checkout on ``PYTHONPATH`` also works."""

from __future__ import annotations

import os
from pathlib import Path

VARIABLE = "nnUNet_extTrainer"
EXT_FOLDER = Path(__file__).resolve().parent.parent / "nnunet_ext"


def ensure_ext_trainer_path(environ: dict[str, str] | None = None) -> str:
    """Append nnugen's re-export folder to ``nnUNet_extTrainer`` (kept as is if already there); returns the value."""
    environ = os.environ if environ is None else environ
    current = [p for p in environ.get(VARIABLE, "").split(os.pathsep) if p]
    if str(EXT_FOLDER) not in current:
        current.append(str(EXT_FOLDER))
    environ[VARIABLE] = os.pathsep.join(current)
    return environ[VARIABLE]
