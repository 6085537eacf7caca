"""The trained autoencoder as the latent diffusion model reads it: ``autoencoder.json`` (constructor arguments,
plain JSON) and ``autoencoder_weights.pt`` (a state dict of tensors only). Both are written atomically by the
autoencoder trainer and read with ``weights_only=True``: a file that would need unsafe unpickling is refused. The
weights are those of the plain autoencoder, also when it trained compiled; a file an older nnugen exported from a
``torch.compile`` wrapper (keys ``_orig_mod.``) is read with a note.

The same two things, arguments and weights, also travel inside another model's checkpoint (``CHECKPOINT_KEY``): the
latent diffusion model keeps its frozen autoencoder there, so ``nnUNetv2_export_model_to_zip`` (which copies the
checkpoints, not these side files) carries it (docs/sharing.md)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from nnugen.atomic_files import atomic_torch_save, atomic_write_json
from nnugen.folders.checkpoint_files import CheckpointError, load_nnunet_checkpoint, without_compile_prefix
from nnugen.models.compile_policy import plain_state_dict
from nnugen.models.weights_only import load_weights_only
from nnugen.networks.autoencoder import Autoencoder
from nnugen.typed_section import read_json_object

CONFIG_FILE = "autoencoder.json"
WEIGHTS_FILE = "autoencoder_weights.pt"
FINAL_CHECKPOINT = "checkpoint_final.pth"
ARGUMENT_FIELDS = {"in_channels": int, "features_per_stage": tuple[int, ...], "strides": tuple[tuple[int, ...], ...],
                   "latent_channels": int, "kind": str, "codebook_size": int, "scale_factor": float | None}
"""``autoencoder.json``'s fields and their types (``model_builders.autoencoder_arguments``; ``scale_factor`` only in
files of older versions), checked when it is read."""
ARGUMENTS_KEY = "nnugen_autoencoder_arguments"
"""The entry of the autoencoder trainer's own checkpoints that holds ``autoencoder.json``'s dict: with the checkpoint's
network weights, the autoencoder of a fold folder that travelled without its side files."""
CHECKPOINT_KEY = "nnugen_autoencoder"
"""The entry of a checkpoint that carries a frozen autoencoder: ``{"arguments": autoencoder.json's dict, "weights":
its state dict}`` (tensors and plain values only, so the checkpoint still loads weights-only)."""


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
        if (folder / FINAL_CHECKPOINT).is_file():
            return autoencoder_from_checkpoint(folder / FINAL_CHECKPOINT, device, note)
        raise ValueError(f"{folder} holds no trained autoencoder ({CONFIG_FILE} + {WEIGHTS_FILE}); train one with "
                         "nnugen_train ID FOLD CONFIG --task autoencoder first")
    arguments = read_json_object(config, ARGUMENT_FIELDS, "train the autoencoder again")
    state = load_weights_only(weights, device, "train the autoencoder again", note)
    return _frozen(arguments, state, f"{weights} does not match {config}", "train the autoencoder again", device), \
        arguments


def autoencoder_from_checkpoint(checkpoint: Path, device: torch.device | str = "cpu",
                                note: Callable[[str], None] = print) -> tuple[Autoencoder, dict]:
    """(frozen autoencoder, its arguments) from the autoencoder trainer's own ``checkpoint`` (weights only): its
    network weights and ``ARGUMENTS_KEY``. For a fold folder that was exported with nnU-Net's tools, which copy the
    checkpoint but not ``autoencoder.json`` / ``autoencoder_weights.pt``."""
    remedy = "train the autoencoder again (nnugen_train ID FOLD CONFIG --task autoencoder)"
    try:
        state = load_nnunet_checkpoint(str(checkpoint), torch.device("cpu"))
    except CheckpointError as error:
        raise ValueError(str(error)) from None
    arguments = state.get(ARGUMENTS_KEY)
    if not isinstance(arguments, dict):
        raise ValueError(f"{checkpoint.parent} holds no {CONFIG_FILE} + {WEIGHTS_FILE}, and {checkpoint.name} does not "
                         f"name the autoencoder's arguments (written by an older nnugen); copy those two files from "
                         f"the fold folder it was trained in, or {remedy}")
    weights, compiled = without_compile_prefix(state["network_weights"])
    if compiled:
        note(f"note: {checkpoint} was written from a torch.compile'd model (keys '_orig_mod.'); read without the "
             "prefix")
    return _frozen(dict(arguments), weights, f"{checkpoint}: the network weights do not fit {ARGUMENTS_KEY}", remedy,
                   device), dict(arguments)


def autoencoder_entry(autoencoder: Autoencoder, arguments: dict) -> dict:
    """What ``CHECKPOINT_KEY`` holds for ``autoencoder`` (the plain module's weights, on the CPU)."""
    weights = {name: value.detach().cpu() for name, value in plain_state_dict(autoencoder).items()}
    return {"arguments": dict(arguments), "weights": weights}


def autoencoder_from_entry(entry: object, where: str, remedy: str,
                           device: torch.device | str = "cpu") -> tuple[Autoencoder, dict]:
    """(frozen autoencoder in eval mode, its arguments) from a checkpoint's ``CHECKPOINT_KEY`` entry; ``where`` names
    the checkpoint in messages, ``remedy`` ends them."""
    if not isinstance(entry, dict) or not isinstance(entry.get("arguments"), dict) or \
            not isinstance(entry.get("weights"), dict):
        raise ValueError(f"{where}: {CHECKPOINT_KEY} is not an autoencoder's arguments and weights; {remedy}")
    arguments = dict(entry["arguments"])
    return _frozen(arguments, entry["weights"], f"{where}: the autoencoder's weights do not fit its arguments", remedy,
                   device), arguments


def _frozen(arguments: dict, state: dict, mismatch: str, remedy: str, device: torch.device | str) -> Autoencoder:
    """The ``Autoencoder(**arguments)`` with ``state`` loaded, frozen and in eval mode on ``device``."""
    model_arguments = {k: v for k, v in arguments.items() if k not in ("scale_factor",)}
    try:
        autoencoder = Autoencoder(**model_arguments)
        autoencoder.load_state_dict(state)
    except (TypeError, RuntimeError, ValueError) as error:
        raise ValueError(f"{mismatch} ({str(error).splitlines()[0]}); {remedy}") from None
    autoencoder.eval().requires_grad_(False)
    return autoencoder.to(device)
