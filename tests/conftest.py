"""Shared fixtures. ``fake_preprocessed`` writes what ``nnUNetv2_plan_and_preprocess`` leaves in
``nnUNet_preprocessed/DatasetXXX_Name/`` (nnUNetPlans.json, dataset.json, dataset_fingerprint.json) by hand, with
nnU-Net 2.8's key names, so planner and CLI tests run in milliseconds without nnU-Net preprocessing anything."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

VARIANTS = ("isotropic", "anisotropic")


def _conv_op(dim: int) -> str:
    return f"torch.nn.modules.conv.Conv{dim}d"


def _norm_op(dim: int) -> str:
    return f"torch.nn.modules.instancenorm.InstanceNorm{dim}d"


def arch_kwargs(features: list[int], kernel_sizes: list[list[int]], strides: list[list[int]]) -> dict[str, Any]:
    """``architecture.arch_kwargs`` as nnU-Net 2.8's ExperimentPlanner writes it for a PlainConvUNet."""
    n, dim = len(features), len(kernel_sizes[0])
    return {
        "n_stages": n,
        "features_per_stage": list(features),
        "conv_op": _conv_op(dim),
        "kernel_sizes": [list(k) for k in kernel_sizes],
        "strides": [list(s) for s in strides],
        "n_conv_per_stage": [2] * n,
        "n_conv_per_stage_decoder": [2] * (n - 1),
        "conv_bias": True,
        "norm_op": _norm_op(dim),
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }


def configuration(name: str, patch_size: list[int], batch_size: int, spacing: list[float], median_size: list[float],
                  arch: dict[str, Any], plans_name: str = "nnUNetPlans") -> dict[str, Any]:
    """One entry of ``plans["configurations"]`` with every key nnU-Net 2.8 writes."""
    dim = len(patch_size)
    return {
        "data_identifier": f"{plans_name}_{name}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": batch_size,
        "patch_size": list(patch_size),
        "median_image_size_in_voxels": list(median_size),
        "spacing": list(spacing),
        "normalization_schemes": ["ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": arch,
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": dim == 2,
    }


ANISOTROPIC_3D_FULLRES = {
    "patch_size": [20, 320, 256],
    "features_per_stage": [32, 64, 128, 256, 320, 320, 320],
    "kernel_sizes": [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3]],
    "strides": [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]],
}


def _anisotropic_configurations(plans_name: str) -> dict[str, dict[str, Any]]:
    """Prostate-like: 3 mm slices, 0.5 mm in-plane (nnU-Net's ExperimentPlanner on such spacing)."""
    full = ANISOTROPIC_3D_FULLRES
    arch_full = arch_kwargs(full["features_per_stage"], full["kernel_sizes"], full["strides"])
    arch_2d = arch_kwargs([32, 64, 128, 256, 512, 512, 512], [[3, 3]] * 7, [[1, 1]] + [[2, 2]] * 6)
    arch_low = arch_kwargs([32, 64, 128, 256, 320, 320], [[1, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3], [3, 3, 3],
                                                          [3, 3, 3]],
                           [[1, 1, 1], [1, 2, 2], [2, 2, 2], [2, 2, 2], [1, 2, 2], [1, 2, 2]])
    return {
        "2d": configuration("2d", [320, 256], 12, [0.5, 0.5], [320.0, 320.0], arch_2d, plans_name),
        "3d_lowres": {**configuration("3d_lowres", [20, 192, 160], 2, [3.0, 0.9, 0.9], [24.0, 178.0, 178.0],
                                      arch_low, plans_name), "next_stage": "3d_cascade_fullres"},
        "3d_fullres": configuration("3d_fullres", full["patch_size"], 2, [3.0, 0.5, 0.5], [24.0, 320.0, 320.0],
                                    arch_full, plans_name),
        "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
    }


def _isotropic_configurations(plans_name: str) -> dict[str, dict[str, Any]]:
    """A small isotropic dataset (1 mm voxels, 48^3 images): small patches so every budget test stays cheap."""
    arch_2d = arch_kwargs([32, 64, 128, 256, 512], [[3, 3]] * 5, [[1, 1]] + [[2, 2]] * 4)
    arch_3d = arch_kwargs([32, 64, 128, 256], [[3, 3, 3]] * 4, [[1, 1, 1]] + [[2, 2, 2]] * 3)
    return {
        "2d": configuration("2d", [48, 48], 32, [1.0, 1.0], [48.0, 48.0], arch_2d, plans_name),
        "3d_lowres": {**configuration("3d_lowres", [32, 32, 32], 2, [1.5, 1.5, 1.5], [32.0, 32.0, 32.0], arch_3d,
                                      plans_name), "next_stage": "3d_cascade_fullres"},
        "3d_fullres": configuration("3d_fullres", [48, 48, 48], 2, [1.0, 1.0, 1.0], [48.0, 48.0, 48.0], arch_3d,
                                    plans_name),
        "3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"},
    }


INTENSITY_PROPERTIES = {
    "max": 1843.0,
    "mean": 412.7,
    "median": 398.0,
    "min": 3.0,
    "percentile_00_5": 52.0,
    "percentile_99_5": 1021.0,
    "std": 171.3,
}


def nnunet_plans(variant: str = "isotropic", dataset_name: str = "Dataset901_Fake",
                 plans_name: str = "nnUNetPlans") -> dict[str, Any]:
    """A hand-written ``nnUNetPlans.json`` as nnU-Net 2.8's ExperimentPlanner writes it (same keys, same order)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant {variant!r}: use one of {VARIANTS}")
    anisotropic = variant == "anisotropic"
    configurations = (_anisotropic_configurations if anisotropic else _isotropic_configurations)(plans_name)
    spacing = [3.0, 0.5, 0.5] if anisotropic else [1.0, 1.0, 1.0]
    shape = [24, 320, 320] if anisotropic else [48, 48, 48]
    return {
        "dataset_name": dataset_name,
        "plans_name": plans_name,
        "original_median_spacing_after_transp": spacing,
        "original_median_shape_after_transp": shape,
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": configurations,
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": dict(INTENSITY_PROPERTIES)},
    }


def dataset_json(num_training: int = 10) -> dict[str, Any]:
    return {
        "channel_names": {"0": "T2"},
        "labels": {"background": 0, "lesion": 1, "organ": 2},
        "numTraining": num_training,
        "file_ending": ".nii.gz",
        "name": "Fake",
    }


def dataset_fingerprint(variant: str = "isotropic", num_training: int = 10) -> dict[str, Any]:
    spacing = [3.0, 0.5, 0.5] if variant == "anisotropic" else [1.0, 1.0, 1.0]
    shape = [24, 320, 320] if variant == "anisotropic" else [48, 48, 48]
    return {
        "foreground_intensity_properties_per_channel": {"0": dict(INTENSITY_PROPERTIES)},
        "median_relative_size_after_cropping": 1.0,
        "shapes_after_crop": [list(shape)] * num_training,
        "spacings": [list(spacing)] * num_training,
    }


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")
    return path


def write_preprocessed_dataset(root: Path, variant: str = "isotropic", dataset_id: int = 901, name: str = "Fake",
                               edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Write ``root/DatasetXXX_Name/{nnUNetPlans.json, dataset.json, dataset_fingerprint.json}``; returns the folder.
    ``edit(plans)`` may change the plans dict before it is written."""
    dataset_name = f"Dataset{dataset_id:03d}_{name}"
    folder = Path(root) / dataset_name
    folder.mkdir(parents=True, exist_ok=True)
    plans = nnunet_plans(variant, dataset_name)
    if edit is not None:
        edit(plans)
    write_json(folder / "nnUNetPlans.json", plans)
    write_json(folder / "dataset.json", dataset_json())
    write_json(folder / "dataset_fingerprint.json", dataset_fingerprint(variant))
    return folder


@pytest.fixture(scope="session")
def preprocessed_dataset_writer() -> Callable[..., Path]:
    """``write_preprocessed_dataset`` for fixtures of a wider scope (sets no environment variable)."""
    return write_preprocessed_dataset


@pytest.fixture
def fake_preprocessed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Path]:
    """Factory: ``fake_preprocessed(variant="isotropic", dataset_id=901, name="Fake", edit=None) -> dataset folder``
    (variants: "isotropic", a small 48^3 dataset; "anisotropic", prostate-like with a 20x320x256 3d_fullres patch).

    Sets ``nnUNet_preprocessed`` to ``tmp_path/nnUNet_preprocessed`` and unsets ``nnUNet_raw`` (so nnugen_plan
    skips its raw dataset check) and ``nnUNet_results``. ``edit(plans)`` may change the plans dict before it is
    written. Can be called several times with different IDs in one test."""
    root = tmp_path / "nnUNet_preprocessed"
    root.mkdir(exist_ok=True)
    monkeypatch.setenv("nnUNet_preprocessed", str(root))
    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.delenv("nnUNet_results", raising=False)

    def make(variant: str = "isotropic", dataset_id: int = 901, name: str = "Fake",
             edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
        return write_preprocessed_dataset(root, variant, dataset_id, name, edit)

    return make


@pytest.fixture(params=VARIANTS)
def any_preprocessed(request: pytest.FixtureRequest, fake_preprocessed: Callable[..., Path]) -> Path:
    """The dataset folder of each variant in turn (isotropic, anisotropic)."""
    return fake_preprocessed(request.param)
