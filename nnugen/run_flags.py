"""The runtime flags of one training run, and their one channel to nnU-Net's trainer.

``nnugen_train --seed S --progress/--no-progress -pretrained_weights FILE --partition Z Y X`` cannot hand these to
the trainer as arguments: nnU-Net's ``run_training`` creates the trainer itself, from the plans, configuration, fold and
dataset.json only (in spawned processes under ``-num_gpus``, on every rank under torchrun). They travel as
environment variables, which every one of those processes inherits, and only here are they named, written and read.
Settings that change the model never travel this way: they belong in the plans (docs/extending.md, "Where settings
must live"). With ``nnUNetv2_train``, set the variables yourself (``NNUGEN_SEED=0 nnUNetv2_train ...``;
``NNUGEN_PRETRAINED_WEIGHTS=FILE`` in place of nnU-Net's own ``-pretrained_weights``, whose loader knows nnU-Net's
network only).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

SEED_VARIABLE = "NNUGEN_SEED"
PROGRESS_VARIABLE = "NNUGEN_PROGRESS"
PRETRAINED_VARIABLE = "NNUGEN_PRETRAINED_WEIGHTS"
PARTITION_VARIABLE = "NNUGEN_PARTITION"


@dataclass(frozen=True)
class RunFlags:
    seed: int | None = None
    """Seeds Python, NumPy and torch with ``seed + local rank``, and the augmentation workers; None: unseeded."""
    progress: bool = False
    """A progress bar for the run on rank 0 (epoch, step, smoothed loss, ETA; trainers/epoch_progress.py)."""
    pretrained_weights: str | None = None
    """An nnU-Net checkpoint the network starts from (nnU-Net's ``-pretrained_weights``), loaded at initialisation."""
    partition: tuple[int, ...] | None = None
    """Pieces per spatial axis of a patch split across the ranks of a torchrun job (``--partition``); None: not."""

    def environment(self) -> dict[str, str]:
        """The variables that carry these flags (an empty seed clears one an earlier run of this process set)."""
        return {SEED_VARIABLE: "" if self.seed is None else str(self.seed),
                PROGRESS_VARIABLE: "1" if self.progress else "0",
                PRETRAINED_VARIABLE: self.pretrained_weights or "",
                PARTITION_VARIABLE: " ".join(map(str, self.partition or ()))}

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> RunFlags:
        """The flags the trainer's process was started with; ValueError for a seed that is not an integer."""
        environ = os.environ if environ is None else environ
        value = environ.get(SEED_VARIABLE, "")
        try:
            seed = int(value) if value != "" else None
        except ValueError:
            raise ValueError(f"{SEED_VARIABLE}={value!r} is not an integer; set it to e.g. 0 or unset it") from None
        pieces = environ.get(PARTITION_VARIABLE, "").split()
        try:
            partition = tuple(int(p) for p in pieces) or None
        except ValueError:
            raise ValueError(f"{PARTITION_VARIABLE}={' '.join(pieces)!r} is not a list of integers; set it to e.g. "
                             "'1 1 2' or unset it") from None
        return cls(seed, environ.get(PROGRESS_VARIABLE) == "1", environ.get(PRETRAINED_VARIABLE) or None, partition)


def progress_wanted(flag: bool | None, stream: TextIO) -> bool:
    """``--progress`` (True) / ``--no-progress`` (False) as given; neither (None): a bar when ``stream`` (stdout) is a
    terminal, none in a log file or a pipe."""
    if flag is not None:
        return flag
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
