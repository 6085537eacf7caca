"""A trained DDPM's denoiser as another model reads it (the frozen base of a label adapter): ``denoiser.json`` (what
it is: mode, channels, denoiser and diffusion settings; plain JSON) and ``denoiser_weights.pt`` (the EMA weights when
the model keeps them, else the trained ones; a state dict of tensors only). The DDPM trainer writes both atomically
at the end of training; they are read with ``weights_only=True``, and a file that would need unsafe unpickling is
refused."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from nnugen.atomic_files import atomic_torch_save, atomic_write_json
from nnugen.models.weights_only import load_weights_only

CONFIG_FILE = "denoiser.json"
WEIGHTS_FILE = "denoiser_weights.pt"
CHECKED_KEYS = ("mode", "image_channels", "denoiser", "diffusion")
"""What a base model must share with the plans of the model built on it."""


def denoiser_description(settings, image_channels: int, mode: str) -> dict:
    """What ``denoiser.json`` records: the mode, the image channels and the denoiser and diffusion settings."""
    return {"mode": mode, "image_channels": image_channels, "denoiser": settings.denoiser.to_dict(),
            "diffusion": settings.diffusion.to_dict()}


def base_model_folder(setting: str, results: Path, dataset_name: str, plans_name: str, configuration: str,
                      fold) -> Path:
    """The fold folder of a base DDPM: ``setting`` (a model folder or its fold folder), or when it is empty the same
    dataset's ``NnugenDDPMTrainer__PLANS__CONFIGURATION/fold_F`` under ``results``."""
    if setting:
        folder = Path(setting)
        return folder if (folder / CONFIG_FILE).is_file() else folder / f"fold_{fold}"
    return Path(results) / dataset_name / f"NnugenDDPMTrainer__{plans_name}__{configuration}" / f"fold_{fold}"


def save_denoiser(denoiser: nn.Module, description: dict, folder: Path) -> None:
    state = {k: v.detach().cpu() for k, v in denoiser.state_dict().items()}
    atomic_torch_save(state, Path(folder) / WEIGHTS_FILE)
    atomic_write_json(Path(folder) / CONFIG_FILE, description)


def load_denoiser_weights(folder: Path, expected: dict, device: torch.device | str = "cpu") -> dict:
    """The state dict exported to ``folder``, after checking that its description matches ``expected`` on
    ``CHECKED_KEYS``; one-line ValueErrors saying what to do."""
    folder = Path(folder)
    config, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config.is_file() or not weights.is_file():
        raise ValueError(f"{folder} holds no exported DDPM ({CONFIG_FILE} + {WEIGHTS_FILE}); train the base model "
                         "first: nnugen_plan --set ddpm.generation.mode=image, then nnugen_train ID FOLD CONFIG "
                         "--task ddpm (or set ddpm.generation.base_model to a trained one)")
    found = json.loads(config.read_text())
    wanted = json.loads(json.dumps(expected))  # tuples -> lists, as they were written
    for key, there, here in _differences(found, wanted, CHECKED_KEYS)[:1]:
        raise ValueError(f"the base model in {folder} does not match these plans ({key}: {_short(there)} there, "
                         f"{_short(here)} here); train the base again with these plans, or set "
                         "ddpm.generation.base_model to a matching model folder")
    return load_weights_only(weights, device, "train the base model again")


def _differences(found: dict, wanted: dict, keys, prefix: str = "") -> list[tuple[str, object, object]]:
    """(dotted key, found, wanted) of every leaf that differs among ``keys``."""
    differences = []
    for key in keys:
        there, here = found.get(key), wanted.get(key)
        if isinstance(there, dict) and isinstance(here, dict):
            differences += _differences(there, here, sorted(set(there) | set(here)), f"{prefix}{key}.")
        elif there != here:
            differences.append((f"{prefix}{key}", there, here))
    return differences


def _short(value) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 80 else text[:77] + "..."
