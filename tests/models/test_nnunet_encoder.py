"""The encoder of a trained nnU-Net model: found in nnU-Net's results layout (nnugen's baseline first, then nnU-Net's
own trainer), given as a model or fold folder, and built from the folder's plans with the checkpoint's weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nnugen.folders.checkpoint_files import CheckpointError
from nnugen.models.nnunet_encoder import find_segmentation_model, nnunet_encoder, trained_fold

DATASET = "Dataset901_Fake"
ARCHITECTURE = {
    "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "arch_kwargs": {
        "n_stages": 2, "features_per_stage": [4, 8], "conv_op": "torch.nn.modules.conv.Conv2d",
        "kernel_sizes": [[3, 3], [3, 3]], "strides": [[1, 1], [2, 2]], "n_conv_per_stage": [1, 1],
        "n_conv_per_stage_decoder": [1], "conv_bias": True, "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True},
    },
    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
}


def _trained(results: Path, trainer: str, plans_name: str, seed: int = 0) -> tuple[Path, torch.nn.Module]:
    """A model folder as nnU-Net's training leaves it (plans.json, dataset.json, fold_0/checkpoint_final.pth)."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    folder = results / DATASET / f"{trainer}__{plans_name}__2d"
    (folder / "fold_0").mkdir(parents=True)
    plans = {"dataset_name": DATASET, "plans_name": plans_name, "label_manager": "LabelManager",
             "configurations": {"2d": {"data_identifier": f"{plans_name}_2d", "patch_size": [16, 16],
                                       "architecture": ARCHITECTURE}}}
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T1", "1": "T2"},
                                                     "labels": {"background": 0, "organ": 1}, "numTraining": 2,
                                                     "file_ending": ".nii.gz"}))
    torch.manual_seed(seed)
    network = get_network_from_plans(ARCHITECTURE["network_class_name"], ARCHITECTURE["arch_kwargs"],
                                     ARCHITECTURE["_kw_requires_import"], 2, 2, deep_supervision=False)
    torch.save({"network_weights": network.state_dict(), "init_args": {"configuration": "2d"},
                "trainer_name": trainer}, folder / "fold_0" / "checkpoint_final.pth")
    return folder / "fold_0", network


def test_the_baseline_is_found_before_nnunets_own_model_and_a_missing_one_is_none(tmp_path):
    assert find_segmentation_model(tmp_path, DATASET, "2d", 0) is None
    plain, _ = _trained(tmp_path, "nnUNetTrainer", "nnUNetPlans")
    assert find_segmentation_model(tmp_path, DATASET, "2d", 0) == plain
    baseline, _ = _trained(tmp_path, "NnugenBaselineTrainer", "nnugenPlans")
    assert find_segmentation_model(tmp_path, DATASET, "2d", 0) == baseline
    assert find_segmentation_model(tmp_path, DATASET, "2d", 1) is None
    assert find_segmentation_model(tmp_path, DATASET, "3d", 0) is None


def test_a_model_folder_or_its_fold_folder_is_accepted(tmp_path):
    fold, _ = _trained(tmp_path, "nnUNetTrainer", "nnUNetPlans")
    assert trained_fold(fold.parent, 0) == fold and trained_fold(fold, 0) == fold
    assert trained_fold(fold.parent, 1) is None and trained_fold(tmp_path, 0) is None


def test_the_encoder_carries_the_checkpoints_weights(tmp_path):
    fold, network = _trained(tmp_path, "nnUNetTrainer", "nnUNetPlans", seed=3)
    encoder = nnunet_encoder(fold).eval()
    network.eval()
    image = torch.randn(1, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for ours, theirs in zip(encoder(image), network.encoder(image)):
            torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_a_broken_checkpoint_gets_a_one_line_error(tmp_path):
    fold, _ = _trained(tmp_path, "nnUNetTrainer", "nnUNetPlans")
    (fold / "checkpoint_final.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="checkpoint_final.pth does not load"):
        nnunet_encoder(fold)
