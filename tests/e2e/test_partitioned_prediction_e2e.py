"""``torchrun --nproc_per_node 2 nnugen_predict ... --partition 1 2`` (issue 19, part 2) with the trained 2D diffusion
segmenter: two gloo processes, each predicting the tiles of one slab of every case, write the files of one process
(``--partition 1 1``): segmentation, probabilities and the ensemble's uncertainty maps, to float tolerance; with
``-num_parts 2 -part_id 1`` only that part's case. Partitions a run cannot use are refused in one line, exit code 1,
and nothing is written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from e2e_helpers import cli, nnunet_environment, run_all
from test_diffseg_e2e import FAST, dataset_paths

FLAGS = [*FAST, "-f", "0", "--save-uncertainty", "--save_probabilities", "--ensemble-size", "2", "--steps", "2",
         "--seed", "4"]


@pytest.fixture(scope="module")
def wide_cases(trained_diffseg2d, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The two test images, each put side by side with its mirror image: 64 x 128 voxels, 1 x 3 windows of the
    64 x 64 patch, so two processes share each case's windows."""
    _, images, _ = dataset_paths(trained_diffseg2d)
    folder = tmp_path_factory.mktemp("wide") / "images"
    folder.mkdir()
    for k, path in enumerate(sorted(images.glob("*_0000.nii.gz"))):
        image = sitk.ReadImage(str(path))
        values = sitk.GetArrayFromImage(image)
        wide = sitk.GetImageFromArray(np.concatenate([values, values[:, ::-1]], axis=1))
        wide.SetSpacing(image.GetSpacing())
        wide.SetOrigin(image.GetOrigin())
        wide.SetDirection(image.GetDirection())
        sitk.WriteImage(wide, str(folder / f"wide{k}_0000.nii.gz"))
    return folder, nnunet_environment(trained_diffseg2d.parents[2])


def _command(model: Path, images: Path, out: Path, partition: list[str], processes: int = 1,
             extra: tuple[str, ...] = ()) -> list[str]:
    command = [cli("nnugen_predict"), "-m", str(model), "-i", str(images), "-o", str(out), *FLAGS, *extra,
               "--partition", *partition, "--partition-timeout", "120"]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   *command]
    return command


def _predict(model: Path, images: Path, out: Path, env, partition: list[str], processes: int = 1,
             extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(_command(model, images, out, partition, processes, extra),
                          env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=900)


def _array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_two_processes_write_the_files_of_one_and_compose_with_parts(trained_diffseg2d, wide_cases, tmp_path):
    images, env = wide_cases
    env = {**env, "OMP_NUM_THREADS": "1"}
    _, two = run_all([  # side by side (most of each is start-up), each into its own folder
        (_command(trained_diffseg2d, images, tmp_path / "one", ["1", "1"]), env),
        (_command(trained_diffseg2d, images, tmp_path / "two", ["1", "2"], processes=2,
                  extra=("-num_parts", "2", "-part_id", "1")), env)])
    assert "cut 1 x 2 over 2 process(es)" in two.stdout
    assert sorted(p.name for p in (tmp_path / "one").glob("wide*")) == [
        f"wide{k}{suffix}" for k in (0, 1)
        for suffix in (".nii.gz", ".npz", ".pkl", "_entropy.nii.gz", "_variance.nii.gz")]
    assert sorted(p.name for p in (tmp_path / "two").glob("wide*")) == [
        f"wide1{suffix}" for suffix in (".nii.gz", ".npz", ".pkl", "_entropy.nii.gz", "_variance.nii.gz")]
    expected = np.load(tmp_path / "one" / "wide1.npz")["probabilities"]
    probabilities = np.load(tmp_path / "two" / "wide1.npz")["probabilities"]
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-5)
    segmentation = _array(tmp_path / "two" / "wide1.nii.gz")
    top = np.sort(expected, axis=0)
    decided = (top[-1] - top[-2] > 1e-4).reshape(segmentation.shape)  # elsewhere rounding decides a tie's argmax
    assert decided.mean() > 0.99 and (segmentation == _array(tmp_path / "one" / "wide1.nii.gz"))[decided].all()
    assert len(np.unique(segmentation)) > 1
    for name in ("entropy", "variance"):
        np.testing.assert_allclose(_array(tmp_path / "two" / f"wide1_{name}.nii.gz"),
                                   _array(tmp_path / "one" / f"wide1_{name}.nii.gz"), rtol=0, atol=1e-5)


@pytest.mark.parametrize("partition, processes, message", [
    (["1", "2"], 1, "nnugen_predict: error: --partition 1 2 makes 2 pieces but 1 process(es) run; start torchrun with "
                    "--nproc_per_node 2"),
    (["1", "1", "1"], 1, "nnugen_predict: error: --partition 1 1 1: give one number of pieces per spatial axis (2 for "
                         "this 2d configuration)"),
    (["1", "1"], 2, "nnugen_predict: error: --partition 1 1 makes 1 pieces but 2 process(es) run"),
    (["2", "1"], 2, "nnugen_predict: error: --partition 2 1: this case has 1 x 3 sliding windows (preprocessed shape "
                    "(64, 128), patch (64, 64), -step_size 0.5), fewer than the pieces along an axis"),
])
def test_a_partition_the_run_cannot_use_is_refused_before_anything_is_written(trained_diffseg2d, wide_cases, tmp_path,
                                                                             partition, processes, message):
    images, env = wide_cases
    run = _predict(trained_diffseg2d, images, tmp_path / "out", env, partition, processes)
    assert run.returncode != 0 and not (tmp_path / "out").exists()
    lines = run.stderr.strip().splitlines()
    if processes > 1:  # each rank says it in one line, then torchrun reports its failed children
        assert run.returncode == 1 or "ChildFailedError" in run.stderr
        lines = [line for line in lines if line.startswith("nnugen_predict: error:")]
    assert run.returncode == 1 or processes > 1
    assert len(lines) == processes and all(line.startswith(message) for line in lines), run.stderr[-3000:]
