"""Reading a file of nnugen's own weights (a state dict of tensors) with ``torch.load(weights_only=True)``: a file
that would need unsafe unpickling is refused, and any failure is one ``ValueError`` that says what to do. Files
exported from a ``torch.compile``-wrapped model (keys ``_orig_mod.``, compile_policy.py) are read with the prefix
stripped, and a one-line note says so."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import torch

from nnugen.folders.checkpoint_files import without_compile_prefix


def load_weights_only(path: Path, device: torch.device | str, remedy: str,
                      note: Callable[[str], None] = print) -> dict:
    """The tensors in ``path``; ``remedy`` ends every error message (e.g. "train the autoencoder again"); ``note``
    receives the line about a file written from a compiled model."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"refused to load {path}: it is not a weights-only file and unpickling it could run code; "
                         f"{remedy}") from None
    except (RuntimeError, EOFError) as error:
        raise ValueError(f"{path} does not load ({str(error).splitlines()[0]}); {remedy}") from None
    if not isinstance(state, dict):
        return state
    state, compiled = without_compile_prefix(state)
    if compiled:
        note(f"note: {path} was written from a torch.compile'd model (keys '_orig_mod.'); read without the prefix")
    return state
