"""How nnugen_train reads torchrun's environment, and the launch mistakes it refuses before anything runs:
``-num_gpus`` under torchrun, ``-num_gpus`` on the CPU, ``-device mps`` under torchrun, a partial torchrun
environment, more GPU processes than visible GPUs. Also the seeds derived for workers and cases, and the per-epoch
means of extra metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnugen.run.distributed import TorchrunRank, cpu_threads_per_rank, torchrun_rank
from nnugen.run.train_api import TrainRequest, check_request
from nnugen.seeding import case_seed, derived_seed

TORCHRUN = {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "node0", "MASTER_PORT": "29500"}


def test_torchrun_rank_is_read_from_the_environment():
    assert torchrun_rank({}) is None
    assert torchrun_rank(TORCHRUN) == TorchrunRank(rank=3, local_rank=1, world_size=4)
    with pytest.raises(ValueError, match="MASTER_ADDR, MASTER_PORT not: start nnugen_train with torchrun"):
        torchrun_rank({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="must be integers"):
        torchrun_rank({**TORCHRUN, "RANK": "zero"})


def test_cpu_threads_are_shared_among_the_ranks_of_a_node(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert cpu_threads_per_rank() == 4
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert cpu_threads_per_rank() == 16


def test_cpu_threads_are_those_the_process_may_run_on(monkeypatch):
    # a SLURM job's cpuset or taskset leaves 6 of the node's 64 cores: 3 threads for each of 2 ranks, not 32
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {3, 4, 5, 10, 11, 12})
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert cpu_threads_per_rank() == 3
    monkeypatch.delattr("os.sched_getaffinity")  # macOS, Windows: every core
    assert cpu_threads_per_rank() == 32


@pytest.mark.parametrize(("environment", "changes", "message"), [
    (TORCHRUN, {"num_gpus": 2}, "-num_gpus 2 under torchrun: torchrun starts the processes already"),
    (TORCHRUN, {"device": "mps"}, "-device mps cannot run under torchrun; use -device cpu"),
    ({}, {"num_gpus": 2}, "needs -device cuda; for several CPU processes run torchrun --nproc_per_node 2"),
])
def test_launch_mistakes_are_refused_before_anything_runs(fake_preprocessed, monkeypatch, environment, changes,
                                                          message):
    fake_preprocessed("isotropic")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    request = TrainRequest(**{"dataset": "901", "fold": "0", "configuration": "3d", "device": "cpu", **changes})
    with pytest.raises(ValueError, match=message):
        check_request(request)


@pytest.mark.parametrize(("environment", "num_gpus", "visible", "message"), [
    ({}, 8, 2, "^-num_gpus 8 needs 8 GPUs but this machine shows 2 \\(check CUDA_VISIBLE_DEVICES\\); set -num_gpus "
               "to 2 or fewer$"),
    ({}, 2, 0, "^-num_gpus 2 needs 2 GPUs but this machine shows 0 .*; train where GPUs are visible, or on the CPU "
               "with torchrun ... -device cpu$"),
    ({**TORCHRUN, "LOCAL_WORLD_SIZE": "4"}, 1, 2, "^torchrun's --nproc_per_node 4 needs 4 GPUs but this machine shows "
                                                  "2 .*; set torchrun's --nproc_per_node to 2 or fewer$"),
])
def test_more_gpu_processes_than_visible_gpus_are_refused(fake_preprocessed, monkeypatch, environment, num_gpus,
                                                          visible, message):
    fake_preprocessed("isotropic")
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("torch.cuda.device_count", lambda: visible)
    request = TrainRequest("901", "0", "3d", device="cuda", num_gpus=num_gpus)
    with pytest.raises(ValueError, match=message):
        check_request(request)
    monkeypatch.setattr("torch.cuda.device_count", lambda: 8)  # enough GPUs: the check passes, the next one stops it
    with pytest.raises(ValueError, match="nnugen_plan"):
        check_request(request)


def test_num_gpus_under_torchrun_is_a_one_line_cli_error(tmp_path):
    env = {**os.environ, **TORCHRUN, "nnUNet_preprocessed": str(tmp_path), "nnUNet_results": str(tmp_path / "r")}
    result = subprocess.run([str(Path(sys.executable).parent / "nnugen_train"), "901", "0", "3d", "-device", "cpu",
                             "-num_gpus", "2"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert result.stderr.splitlines() == ["nnugen_train: error: -num_gpus 2 under torchrun: torchrun starts the "
                                          "processes already; drop -num_gpus and set torchrun's --nproc_per_node"]
    assert not (tmp_path / "r").exists()


def test_derived_seeds_depend_only_on_their_keys():
    assert case_seed(7, "case_001") == derived_seed(7, "case_001")
    assert case_seed(7, "case_001") == 2544622415955970947  # case seeds of earlier versions stay the same
    workers = {derived_seed(0, "augmentation", rank, "train", worker, 0) for rank in range(2) for worker in range(2)}
    assert len(workers) == 4
    assert all(0 <= seed < 2**63 for seed in workers)


def test_epoch_metrics_are_means_over_steps_without_non_finite_values():
    from nnugen.trainers.epoch_metrics import EpochMetrics

    metrics = EpochMetrics()
    for value in (1.0, 3.0, float("nan")):
        metrics.add("train/l1", value)
    metrics.add("train/nonfinite_steps", 1)
    assert metrics.collect() == {"train/l1": 2.0, "train/nonfinite_steps": 1.0}
    assert metrics.collect() == {}
