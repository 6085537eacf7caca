"""nnU-Net's results layout, known in nnugen/folders/model_folder.py only."""

from __future__ import annotations

import pytest

from nnugen.folders.dataset_folders import InputError
from nnugen.folders.model_folder import ModelFolder


def test_a_folder_from_its_parts_and_its_parts_from_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    folder = ModelFolder.of("Dataset004_Hippocampus", "NnugenDiffSegTrainer", "3d")
    assert folder.path == tmp_path / "Dataset004_Hippocampus" / "NnugenDiffSegTrainer__nnugenPlans__3d_fullres"
    assert (folder.trainer, folder.plans_identifier, folder.configuration) == (
        "NnugenDiffSegTrainer", "nnugenPlans", "3d_fullres")
    assert folder.identifier(2) == "NnugenDiffSegTrainer__nnugenPlans__3d_fullres/fold_2"
    assert folder.checkpoint("all") == folder.path / "fold_all" / "checkpoint_final.pth"


def test_dataset_ids_are_looked_up_and_folds_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    (tmp_path / "Dataset004_Hippocampus").mkdir()
    folder = ModelFolder.of(4, "NnugenBaselineTrainer", "2d", plans="nnUNetPlans")
    assert folder.path.name == "NnugenBaselineTrainer__nnUNetPlans__2d"
    for fold in (3, 0):
        folder.fold(fold).mkdir(parents=True)
        (folder.checkpoint(fold)).write_bytes(b"")
    folder.fold("all").mkdir()
    assert folder.folds_with("checkpoint_final.pth") == (0, 3)
    assert folder.folds_with("checkpoint_best.pth") == ()


def test_missing_folders_and_files_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("nnUNet_results", raising=False)
    with pytest.raises(InputError, match="^nnUNet_results is not set"):
        ModelFolder.of("Dataset001_X", "T", "2d")
    folder = ModelFolder(tmp_path / "Dataset001_X" / "T__P__2d")
    with pytest.raises(InputError, match="does not exist; train it first$"):
        folder.require("train it first")
    folder.path.mkdir(parents=True)
    with pytest.raises(InputError, match="plans.json is missing; is this a model folder"):
        folder.plans()
    with pytest.raises(InputError, match="not named <Trainer>__<Plans>__<configuration>"):
        _ = ModelFolder(tmp_path / "elsewhere").trainer
