"""A tiny phantom dataset, planned and preprocessed once per test session by the real nnU-Net CLIs, for the
end-to-end tests that drive nnUNetv2_train / nnUNetv2_predict / nnugen_* in subprocesses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from e2e_helpers import cli, nnunet_environment, run

def _prepared_dataset(root: Path, dataset_id: int, name: str, shape: tuple[int, ...], configuration: str) -> Path:
    from nnugen.demo.phantom import PhantomSpec, write_phantom_dataset

    write_phantom_dataset(root / "raw", dataset_id, name, n_train=6, n_test=2, spec=PhantomSpec(shape=shape), seed=0)
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
    """Copy a prepared dataset root so a test may write results without touching the shared one."""

    def copy(root: Path) -> Path:
        target = tmp_path / root.name
        shutil.copytree(root, target, ignore=shutil.ignore_patterns("results"))
        return target

    return copy
