"""A tiny phantom dataset, planned and preprocessed once per test session by the real nnU-Net CLIs, for the
end-to-end tests that drive nnUNetv2_train / nnUNetv2_predict / nnugen_* in subprocesses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from e2e_helpers import SMALL_3D_DENOISER, cli, diffseg_settings, nnunet_environment, planned_copy, run


def _prepared_dataset(root: Path, dataset_id: int, name: str, shape: tuple[int, ...], configuration: str) -> Path:
    from nnugen.demo.phantom import PhantomSpec, write_phantom_dataset

    spec = PhantomSpec(shape=shape, spacing=(1.0,) * len(shape))
    write_phantom_dataset(root / "raw", dataset_id, name, n_train=6, n_test=2, spec=spec, seed=0)
    env = nnunet_environment(root)
    run([cli("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", configuration, "-np", "2", "-npfp", "2",
         "--verify_dataset_integrity"], env)
    return root


@pytest.fixture(scope="session")
def tiny3d(tmp_path_factory) -> Path:
    """Dataset 901 (six 32^3 phantoms + two test cases), preprocessed for 3d_fullres."""
    return _prepared_dataset(tmp_path_factory.mktemp("tiny3d"), 901, "Tiny3D", (32, 32, 32), "3d_fullres")


@pytest.fixture(scope="session")
def tiny2d(tmp_path_factory) -> Path:
    """Dataset 902 (six 64x64 phantoms + two test cases), preprocessed for 2d."""
    return _prepared_dataset(tmp_path_factory.mktemp("tiny2d"), 902, "Tiny2D", (64, 64), "2d")


@pytest.fixture()
def fresh_results(tmp_path):
    """Copy a prepared dataset root so a test may write without touching the shared one: without its results, or
    ``with_results`` (a session's trained models, for a test that writes into their folders)."""

    def copy(root: Path, with_results: bool = False) -> Path:
        target = tmp_path / root.name
        shutil.copytree(root, target, ignore=None if with_results else shutil.ignore_patterns("results"))
        return target

    return copy


# nnU-Net's own network, trained briefly (test_baseline_e2e.py, test_warm_start_e2e.py)
BASELINE_3D = ("baseline.training.epochs=3", "baseline.training.iterations_per_epoch=4",
               "baseline.training.val_iterations_per_epoch=1")


@pytest.fixture(scope="session")
def trained_baseline3d(tiny3d, tmp_path_factory) -> Path:
    """Root of the nnU-Net folders of a copy of dataset 901, planned by nnugen_plan with BASELINE_3D, with
    NnugenBaselineTrainer trained on fold 0 (3d_fullres, seed 0) by nnugen_train --task baseline. Tests that write
    into it work on ``fresh_results(trained_baseline3d, with_results=True)``."""
    root = tmp_path_factory.mktemp("baseline3d")
    env = planned_copy(tiny3d, root, 901, BASELINE_3D)
    run([cli("nnugen_train"), "901", "0", "3d", "--task", "baseline", "-device", "cpu", "--seed", "0"], env)
    return root


def _trained_diffseg(root: Path, prepared: Path, dataset_id: int, configuration: str,
                     settings: tuple[str, ...]) -> Path:
    """nnugen_plan + nnugen_train (seed 0) on a copy of a prepared dataset; returns the model folder
    (``root/results/DatasetX/NnugenDiffSegTrainer__nnugenPlans__CONFIG``)."""
    shutil.copytree(prepared, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("results"))
    env = nnunet_environment(root)
    run([cli("nnugen_plan"), "-d", str(dataset_id), *(a for s in settings for a in ("--set", s))], env)
    run([cli("nnugen_train"), str(dataset_id), "0", configuration, "-device", "cpu", "--seed", "0"], env)
    (dataset,) = (root / "results").iterdir()
    (model,) = dataset.glob("NnugenDiffSegTrainer__nnugenPlans__*")
    assert (model / "fold_0" / "checkpoint_final.pth").is_file()
    return model


@pytest.fixture(scope="session")
def trained_diffseg3d(tiny3d, tmp_path_factory) -> Path:
    """Model folder of NnugenDiffSegTrainer on dataset 901 (3d_fullres) with a small denoiser, trained briefly."""
    return _trained_diffseg(tmp_path_factory.mktemp("diffseg3d"), tiny3d, 901, "3d",
                            diffseg_settings("3d") + SMALL_3D_DENOISER)


@pytest.fixture(scope="session")
def trained_diffseg2d(tiny2d, tmp_path_factory) -> Path:
    """Model folder of NnugenDiffSegTrainer on dataset 902 (2d) with the planned denoiser, trained briefly."""
    return _trained_diffseg(tmp_path_factory.mktemp("diffseg2d"), tiny2d, 902, "2d", diffseg_settings("2d"))


# The generative models' short runs: 1 epoch of 2 iterations, a preview each epoch (test_generation_e2e.py,
# test_export_e2e.py; test_sample_e2e.py samples from a copy of the DDPM)
GENERATOR_SHORT = ("training.epochs=1", "training.iterations_per_epoch=2", "training.val_iterations_per_epoch=1",
                   "training.preview_every=1")
GENERATOR_SMALL = ("denoiser.features_per_stage=[16,32,64,128]", "denoiser.attention_stages=[]")


def generator_sets(task: str, *settings: str) -> list[str]:
    return [a for s in settings for a in ("--set", f"{task}.{s}")]


@pytest.fixture(scope="session")
def trained_generators3d(tiny3d, tmp_path_factory) -> Path:
    """Root of the nnU-Net folders with NnugenDDPMTrainer, NnugenAutoencoderTrainer and NnugenLDMTrainer (on that
    autoencoder) trained briefly on dataset 901 (3d_fullres, fold 0, seed 0)."""
    root = tmp_path_factory.mktemp("generators")
    shutil.copytree(tiny3d, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("results"))
    env = nnunet_environment(root)
    run([cli("nnugen_plan"), "-d", "901",
         *generator_sets("ddpm", *GENERATOR_SHORT, *GENERATOR_SMALL, "generation.preview_steps=2"),
         *generator_sets("autoencoder", *GENERATOR_SHORT, "autoencoder.adversarial_warmup_iterations=1",
                         "autoencoder.features_per_stage=[8,16,16]"),
         *generator_sets("ldm", *GENERATOR_SHORT)], env)
    for task in ("ddpm", "autoencoder", "ldm"):
        run([cli("nnugen_train"), "901", "0", "3d", "--task", task, "-device", "cpu", "--seed", "0"], env)
    return root
