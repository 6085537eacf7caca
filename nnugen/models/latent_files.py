"""What a latent diffusion model keeps besides its denoiser: the scale factor of its latents and its frozen
autoencoder (Rombach et al. 2022). Both travel inside its checkpoints (``SCALE_KEY`` and the autoencoder's
``autoencoder_files.CHECKPOINT_KEY``), which ``nnUNetv2_export_model_to_zip`` copies; ``latent.json`` next to the
checkpoints records the scale and where the autoencoder's fold folder is, for checkpoints written before they carried
it. That path is relative to the latent model's own fold folder
(``../../NnugenAutoencoderTrainer__nnugenPlans__3d_fullres/fold_0``), so a moved or installed ``nnUNet_results`` still
resolves it. Files of older versions hold the absolute path of the training machine: used where it exists, else the
same model and fold folder is looked for beside the latent model's (docs/sharing.md). Torch-free."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nnugen.atomic_files import atomic_write_json
from nnugen.typed_section import MalformedFileError, read_json_object

LATENT_FILE = "latent.json"
"""The latent model's side file next to its checkpoints (written by NnugenLDMTrainer)."""
LATENT_FIELDS = {"autoencoder_folder": str, "scale_factor": float}
"""``latent.json``'s fields and their types, checked when it is read."""
SCALE_KEY = "nnugen_latent_scale_factor"
"""The checkpoint entry of the latents' scale factor (1 / std of the training latents)."""
TRAIN_AGAIN = "train the latent model again (nnugen_train ID FOLD CONFIG --task ldm)"


@dataclass(frozen=True)
class LatentRecord:
    """``latent.json`` as read: the autoencoder's fold folder, resolved on this machine, and the scale factor."""

    autoencoder_folder: Path
    scale_factor: float


def write_latent_record(fold_folder: Path, autoencoder_fold: Path, scale_factor: float) -> None:
    """``fold_folder/latent.json`` with ``autoencoder_fold`` relative to ``fold_folder`` (no absolute path)."""
    relative = os.path.relpath(Path(autoencoder_fold).resolve(), Path(fold_folder).resolve())
    atomic_write_json(Path(fold_folder) / LATENT_FILE,
                      {"autoencoder_folder": Path(relative).as_posix(), "scale_factor": float(scale_factor)})


def read_latent_record(fold_folder: Path) -> LatentRecord:
    """``fold_folder/latent.json``, its autoencoder folder resolved (``autoencoder_fold_folder``); one-line errors
    naming the file and field (MalformedFileError for a broken file)."""
    latent_file = Path(fold_folder) / LATENT_FILE
    if not latent_file.is_file():
        raise ValueError(f"{latent_file} is missing and the checkpoint does not carry the autoencoder (an older "
                         f"nnugen's, or a training that did not finish its start); copy latent.json and the "
                         f"autoencoder's model folder from where it was trained, or {TRAIN_AGAIN}")
    latent = read_json_object(latent_file, LATENT_FIELDS, TRAIN_AGAIN)
    if not latent["scale_factor"] > 0:
        raise MalformedFileError(f"{latent_file}: scale_factor: {latent['scale_factor']} must be > 0; {TRAIN_AGAIN}")
    return LatentRecord(autoencoder_fold_folder(Path(fold_folder), latent["autoencoder_folder"]),
                        float(latent["scale_factor"]))


def autoencoder_fold_folder(fold_folder: Path, recorded: str) -> Path:
    """The autoencoder fold folder ``latent.json`` names: a relative path is taken from the latent model's fold
    folder; an absolute one (older versions) is used where it exists, else ``<its model folder>/<its fold>`` beside
    the latent model's model folder, which is where a moved or installed ``nnUNet_results`` has it. ValueError saying
    where to put the autoencoder when neither exists."""
    path = Path(recorded)
    if not path.is_absolute():
        return Path(os.path.normpath(fold_folder / path))
    if path.is_dir():
        return path
    beside = fold_folder.parent.parent / path.parent.name / path.name
    if beside.is_dir():
        return beside
    raise ValueError(f"{fold_folder / LATENT_FILE}: autoencoder_folder {path} holds no trained autoencoder here (the "
                     f"latent model was trained on a machine where it did); copy that autoencoder's fold folder to "
                     f"{beside}, or {TRAIN_AGAIN}: its checkpoints then carry the autoencoder")
