"""nnU-Net's layout of a trained model, known here and nowhere else::

    nnUNet_results/<DatasetXXX_Name>/<Trainer>__<Plans>__<configuration>/
        plans.json  dataset.json  fold_<F>/checkpoint_final.pth ...

nnU-Net names the model folder ``<Trainer>__<Plans>__<configuration>`` (and splits it on ``__``) and each fold
``fold_<F>``. A ``ModelFolder`` finds such a folder from a dataset, trainer, plans identifier and configuration, or
takes one a user points at (``-m``), and reads what it holds: plans.json, dataset.json, the folds with a checkpoint.
A copied or moved folder works the same, since nothing in it records where it was trained. Torch-free.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from nnugen import PLANS_IDENTIFIER
from nnugen.config import configuration_name
from nnugen.folders.dataset_folders import InputError, dataset_name, load_json

NOT_A_MODEL_FOLDER = "is this a model folder of nnU-Net's training (it holds plans.json, dataset.json and fold_X)?"


def folder_name(trainer: str, plans: str, configuration: str) -> str:
    """``<Trainer>__<Plans>__<configuration>``, nnU-Net's name of a model folder."""
    return f"{trainer}__{plans}__{configuration}"


def fold_name(fold: int | str) -> str:
    return f"fold_{fold}"


def model_id(trainer: str, plans: str, configuration: str, fold: int | str) -> str:
    """``<Trainer>__<Plans>__<configuration>/fold_<F>``: which model and fold a side file (threshold.json) belongs to,
    wherever the folder was copied."""
    return f"{folder_name(trainer, plans, configuration)}/{fold_name(fold)}"


def results_root() -> Path:
    """``$nnUNet_results``; InputError when it is not set."""
    results = os.environ.get("nnUNet_results")
    if not results:
        raise InputError("nnUNet_results is not set; export it as for nnUNetv2_train / nnUNetv2_predict")
    return Path(results)


@dataclass(frozen=True)
class ModelFolder:
    path: Path

    @classmethod
    def of(cls, dataset: str | int, trainer: str, configuration: str, plans: str = PLANS_IDENTIFIER,
           results: Path | None = None) -> ModelFolder:
        """The folder nnU-Net trains ``trainer`` into (it need not exist): under ``results`` (default
        ``$nnUNet_results``), the dataset's name looked up from an ID as nnU-Net does, ``3d`` read as 3d_fullres."""
        root = results_root() if results is None else Path(results)
        return cls(root / dataset_name(dataset) / folder_name(trainer, plans, configuration_name(configuration)))

    def _parts(self) -> list[str]:
        parts = self.path.name.split("__")
        if len(parts) != 3:
            raise InputError(f"{self.path} is not named <Trainer>__<Plans>__<configuration>, as nnU-Net names model "
                             "folders; point at such a folder")
        return parts

    @property
    def trainer(self) -> str:
        return self._parts()[0]

    @property
    def plans_identifier(self) -> str:
        return self._parts()[1]

    @property
    def configuration(self) -> str:
        return self._parts()[2]

    @property
    def dataset_name(self) -> str:
        return self.path.parent.name

    def fold(self, fold: int | str) -> Path:
        return self.path / fold_name(fold)

    def checkpoint(self, fold: int | str, checkpoint: str = "checkpoint_final.pth") -> Path:
        return self.fold(fold) / checkpoint

    def identifier(self, fold: int | str) -> str:
        """``model_id`` of one of this folder's folds."""
        return f"{self.path.name}/{fold_name(fold)}"

    def folds_with(self, checkpoint: str) -> tuple[int, ...]:
        """The numbered folds that hold ``checkpoint``, in order."""
        return tuple(sorted(int(p.name[5:]) for p in self.path.glob("fold_*")
                            if p.name[5:].isdigit() and (p / checkpoint).is_file()))

    def plans(self) -> dict:
        return load_json(self.path / "plans.json", NOT_A_MODEL_FOLDER)

    def dataset_json(self) -> dict:
        return load_json(self.path / "dataset.json", NOT_A_MODEL_FOLDER)

    def require(self, hint: str) -> ModelFolder:
        """This folder, or InputError ``model folder ... does not exist; <hint>``."""
        if not self.path.is_dir():
            raise InputError(f"model folder {self.path} does not exist; {hint}")
        return self
