"""The trained autoencoder as the latent diffusion model reads it: ``autoencoder.json`` (constructor arguments,
plain JSON) and ``autoencoder_weights.pt`` (a state dict of tensors only). Both are written atomically by the
autoencoder trainer and read with ``weights_only=True``: a file that would need unsafe unpickling is refused. The
weights are those of the plain autoencoder, also when it trained compiled; a file an older nnugen exported from a
``torch.compile`` wrapper (keys ``_orig_mod.``) is read with a note."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from nnugen.atomic_files import atomic_torch_save, atomic_write_json
from nnugen.models.compile_policy import plain_state_dict
from nnugen.models.weights_only import load_weights_only
from nnugen.networks.autoencoder import Autoencoder
from nnugen.typed_section import read_json_object

CONFIG_FILE = "autoencoder.json"
WEIGHTS_FILE = "autoencoder_weights.pt"
ARGUMENT_FIELDS = {"in_channels": int, "features_per_stage": tuple[int, ...], "strides": tuple[tuple[int, ...], ...],
                   "latent_channels": int, "kind": str, "codebook_size": int, "scale_factor": float | None}
"""``autoencoder.json``'s fields and their types (``model_builders.autoencoder_arguments``; ``scale_factor`` only in
files of older versions), checked when it is read."""


def save_autoencoder(autoencoder: Autoencoder, arguments: dict, folder: Path) -> None:
    """Write the weights (of the module inside a compile wrapper, if any) and the constructor arguments."""
    atomic_torch_save(plain_state_dict(autoencoder), Path(folder) / WEIGHTS_FILE)
    atomic_write_json(Path(folder) / CONFIG_FILE, arguments)


def load_autoencoder(folder: Path, device: torch.device | str = "cpu",
                     note: Callable[[str], None] = print) -> tuple[Autoencoder, dict]:
    """(frozen autoencoder in eval mode, its arguments) from a folder written by ``save_autoencoder``; ``note``
    receives the line about weights exported from a compiled model."""
    folder = Path(folder)
    config, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config.is_file() or not weights.is_file():
        raise ValueError(f"{folder} holds no trained autoencoder ({CONFIG_FILE} + {WEIGHTS_FILE}); train one with "
                         "nnugen_train ID FOLD CONFIG --task autoencoder first")
    arguments = read_json_object(config, ARGUMENT_FIELDS, "train the autoencoder again")
    state = load_weights_only(weights, device, "train the autoencoder again", note)
    model_arguments = {k: v for k, v in arguments.items() if k not in ("scale_factor",)}
    try:
        autoencoder = Autoencoder(**model_arguments)
        autoencoder.load_state_dict(state)
    except (TypeError, RuntimeError, ValueError) as error:
        raise ValueError(f"{weights} does not match {config} ({str(error).splitlines()[0]}); train the autoencoder "
                         "again") from None
    autoencoder.eval().requires_grad_(False)
    return autoencoder.to(device), arguments
