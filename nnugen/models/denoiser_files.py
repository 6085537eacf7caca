"""A trained denoiser as another model reads it (the frozen base of a label adapter): ``denoiser.json`` (what it is:
mode, channels, denoiser and diffusion settings; plain JSON) and ``denoiser_weights.pt`` (the EMA weights when the
model keeps them, else the trained ones; a state dict of tensors only). The DDPM and anomaly trainers write both
atomically at the end of training (``export_denoiser``); they are read with ``weights_only=True``, and a file that
would need unsafe unpickling is refused. The weights are those of the plain module, also when it trained compiled; a
file exported from a ``torch.compile`` wrapper (keys ``_orig_mod.``) is read with a note."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nnugen.atomic_files import atomic_torch_save, atomic_write_json
from nnugen.config import DenoiserSettings, DiffusionSettings
from nnugen.folders.model_folder import ModelFolder, fold_name
from nnugen.models.compile_policy import plain_state_dict, uncompiled
from nnugen.models.weights_only import load_weights_only
from nnugen.tasks import TASKS
from nnugen.typed_section import read_json_object

CONFIG_FILE = "denoiser.json"
WEIGHTS_FILE = "denoiser_weights.pt"
CHECKED_KEYS = ("mode", "image_channels", "denoiser", "diffusion")
"""What a base model must share with the plans of the model built on it."""
DESCRIPTION_FIELDS = {"mode": str, "image_channels": int, "denoiser": DenoiserSettings, "diffusion": DiffusionSettings}
"""``denoiser.json``'s fields and their types (``denoiser_description``), checked when it is read."""


@dataclass(frozen=True)
class BaseModel:
    """Which trainer's model an adapter builds on, and what its error messages tell the user to do."""

    name: str
    """What the base is, in messages: "DDPM", "anomaly model"."""
    trainer: str
    """The base's trainer, whose fold folder of the same dataset, plans and configuration is the default base."""
    train: str
    """How to train the base, e.g. ``nnugen_train ID FOLD CONFIG --task ddpm``."""
    setting: str
    """The setting that names another base model folder, e.g. ``ddpm.generation.base_model``."""
    own_folder: str
    """What to do when the base model folder is the adapter's own output folder."""


DDPM_BASE = BaseModel("DDPM", TASKS["ddpm"].trainer, "nnugen_plan --set ddpm.generation.mode=image, then nnugen_train "
                      "ID FOLD CONFIG --task ddpm", "ddpm.generation.base_model",
                      "train the adapter as NnugenDDPMTrainer_labelAdapter (nnugen_train ... --task adapter)")


def denoiser_description(settings, image_channels: int, mode: str) -> dict:
    """What ``denoiser.json`` records: the mode, the image channels and the denoiser and diffusion settings."""
    return {"mode": mode, "image_channels": image_channels, "denoiser": settings.denoiser.to_dict(),
            "diffusion": settings.diffusion.to_dict()}


def base_model_folder(setting: str, results: Path, dataset_name: str, plans_name: str, configuration: str,
                      fold, trainer: str = DDPM_BASE.trainer) -> Path:
    """The fold folder of a base model: ``setting`` (a model folder or its fold folder), or when it is empty the same
    dataset's ``TRAINER__PLANS__CONFIGURATION/fold_F`` under ``results`` (the base DDPM by default)."""
    if setting:
        folder = Path(setting)
        return folder if (folder / CONFIG_FILE).is_file() else folder / fold_name(fold)
    return ModelFolder.of(dataset_name, trainer, configuration, plans_name, results).fold(fold)


def save_denoiser(denoiser: nn.Module, description: dict, folder: Path) -> None:
    atomic_torch_save(plain_state_dict(denoiser), Path(folder) / WEIGHTS_FILE)
    atomic_write_json(Path(folder) / CONFIG_FILE, description)


def export_denoiser(generator: nn.Module, description: dict, folder: Path) -> None:
    """Export an ``ImageGenerator``'s denoiser for adapters to build on: its EMA weights when it keeps them (and has
    no adapter, whose EMA would be the adapter's), else the trained ones."""
    generator = uncompiled(generator)
    ema = generator.ema if generator.adapter is None else None
    save_denoiser(ema if ema is not None else generator.denoiser, description, folder)


def load_denoiser_weights(folder: Path, expected: dict, device: torch.device | str = "cpu",
                          base: BaseModel = DDPM_BASE) -> dict:
    """The state dict exported to ``folder``, after checking that its description matches ``expected`` on
    ``CHECKED_KEYS``; one-line ValueErrors saying what to do (``base``: how the user trains the base)."""
    folder = Path(folder)
    config, weights = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config.is_file() or not weights.is_file():
        if (folder / "checkpoint_final.pth").is_file():  # installed with nnU-Net's export, which leaves them out
            raise ValueError(f"{folder} holds a trained {base.name} but not its {CONFIG_FILE} + {WEIGHTS_FILE} "
                             "(nnUNetv2_export_model_to_zip does not copy them); copy both from the fold folder it "
                             f"was trained in, or train the base here: {base.train}")
        raise ValueError(f"{folder} holds no exported {base.name} ({CONFIG_FILE} + {WEIGHTS_FILE}); train the base "
                         f"model first: {base.train} (or set {base.setting} to a trained one)")
    found = read_json_object(config, DESCRIPTION_FIELDS, f"export the base again: {base.train}")
    wanted = json.loads(json.dumps(expected))  # tuples -> lists, as they were written
    for key, there, here in _differences(found, wanted, CHECKED_KEYS)[:1]:
        raise ValueError(f"the base model in {folder} does not match these plans ({key}: {_short(there)} there, "
                         f"{_short(here)} here); train the base again with these plans, or set "
                         f"{base.setting} to a matching model folder")
    return load_weights_only(weights, device, "train the base model again")


def read_base_denoiser(base: BaseModel, setting: str, expected: dict, results: Path, dataset_name: str,
                       plans_name: str, configuration: str, fold, own_trainer: str) -> tuple[Path, dict]:
    """(fold folder, weights) of the base model an adapter trainer ``own_trainer`` builds on (see
    ``base_model_folder``), checked against ``expected``; a base folder that is the adapter's own output folder is
    refused. Called before nnU-Net creates that folder, so a missing or mismatched base writes nothing."""
    folder = base_model_folder(setting, results, dataset_name, plans_name, configuration, fold, base.trainer)
    own = ModelFolder.of(dataset_name, own_trainer, configuration, plans_name, results).fold(fold)
    if folder.resolve() == own.resolve():
        raise ValueError(f"the base model folder {folder} is this run's own output folder; {base.own_folder}")
    return folder, load_denoiser_weights(folder, expected, base=base)


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
