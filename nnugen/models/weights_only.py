"""Reading a file of nnugen's own weights (a state dict of tensors) with ``torch.load(weights_only=True)``: a file
that would need unsafe unpickling is refused, and any failure is one ``ValueError`` that says what to do."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch


def load_weights_only(path: Path, device: torch.device | str, remedy: str) -> dict:
    """The tensors in ``path``; ``remedy`` ends every error message (e.g. "train the autoencoder again")."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"refused to load {path}: it is not a weights-only file and unpickling it could run code; "
                         f"{remedy}") from None
    except (RuntimeError, EOFError) as error:
        raise ValueError(f"{path} does not load ({str(error).splitlines()[0]}); {remedy}") from None
