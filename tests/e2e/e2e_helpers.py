"""Helpers of the end-to-end tests: the console scripts of this environment and an nnU-Net environment."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def cli(name: str) -> str:
    return str(BIN / name)


def nnunet_environment(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}  # nnugen must set it up itself
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
               nnUNet_results=str(root / "results"), nnUNet_def_n_proc="2", nnUNet_n_proc_DA="1",
               OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def free_local_port() -> int:
    """A TCP port free on this machine now, for a rendezvous endpoint ``localhost:PORT``."""
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def succeeded(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """``result`` if its command exited with 0; otherwise an AssertionError with the ends of its output and, for
    torchrun, each rank's own error lines (``[rankN]: ...``), which the tails alone cut off when a rank that did not
    fail first prints its connection error last."""
    if result.returncode != 0:
        by_rank: dict[str, list[str]] = {}
        for line in result.stderr.splitlines():
            if line.startswith("[rank") and "]:" in line:
                by_rank.setdefault(line[:line.index("]:") + 2], []).append(line)
        rank_errors = "\n".join(line for lines in by_rank.values() for line in lines[-25:])
        raise AssertionError(f"{' '.join(result.args)} failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                             f"{result.stderr[-3000:]}" + (f"\nrank errors:\n{rank_errors}" if by_rank else ""))
    return result


def run(command: list[str], env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess:
    return succeeded(subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout))


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: int = 900) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=timeout)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_all(calls: list[tuple[list[str], dict[str, str]]], timeout: int = 900) -> list[subprocess.CompletedProcess]:
    """Run independent CLI calls ``(command, env)`` at the same time and require that each succeeds. Most of a CLI
    call on these tiny datasets is single-threaded start-up (importing torch and nnU-Net), so two calls side by side
    take little longer than one on two cores."""
    processes = [start(command, env) for command, env in calls]
    try:
        results = [finish(process, timeout) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    return [succeeded(result) for result in results]


def planned_copy(prepared: Path, root: Path, dataset_id: int, settings: tuple[str, ...] = ()) -> dict[str, str]:
    """Copy a prepared dataset root (raw and preprocessed, no results) into ``root`` and run nnugen_plan there with
    ``--set`` for each of ``settings``; returns the copy's nnU-Net environment."""
    shutil.copytree(prepared, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("results"))
    env = nnunet_environment(root)
    run([cli("nnugen_plan"), "-d", str(dataset_id), *(a for s in settings for a in ("--set", s))], env)
    return env


def in_process_trainer(trainer_class, preprocessed: Path, configuration: str, fold: int = 0):
    """A trainer built in this process on a planned dataset folder (``nnUNet_preprocessed/DatasetX``), on the CPU, as
    nnU-Net's ``get_trainer_from_args`` builds it; nnUNet_* must point at the dataset's folders."""
    import torch

    plans = json.loads((preprocessed / "nnugenPlans.json").read_text())
    plans["continue_training"] = False
    return trainer_class(plans=plans, configuration=configuration, fold=fold,
                         dataset_json=json.loads((preprocessed / "dataset.json").read_text()),
                         device=torch.device("cpu"))


# the planned 3D denoiser (32-256 features, attention) takes about 5 s per iteration on 2 CPU cores; this one 0.5 s
SMALL_3D_DENOISER = ("segmentation.denoiser.features_per_stage=[16,32,64,128]",
                     "segmentation.denoiser.attention_stages=[]")

# A short diffusion segmentation run: one epoch of a few iterations (enough to segment the organ of these phantoms, far
# above the untrained network; see test_diffseg_e2e.py), one validation iteration, and 2 sampling steps (of the planned
# 5) in validation and prediction, which segment as well as 5 after so short a training. Before nnugen seeded nnU-Net's
# augmentation workers, runs differed: 20 iterations in 3D once gave a Dice of 0.16 instead of ~0.38, 40 never did.
DIFFSEG_ITERATIONS = {"3d": 40, "2d": 20}


def diffseg_settings(configuration: str) -> tuple[str, ...]:
    return ("segmentation.training.epochs=1",
            f"segmentation.training.iterations_per_epoch={DIFFSEG_ITERATIONS[configuration]}",
            "segmentation.training.val_iterations_per_epoch=1", "segmentation.training.val_sampling_steps=2",
            "segmentation.sampler.steps=2")


def demo_copy(prepared: Path, target: Path, monkeypatch) -> tuple[Path, dict[str, str]]:
    """A copy of a prepared dataset root without its results, with this process's nnUNet_* variables (and thread
    count) pointed at it, as the demo's parts read them from the environment; returns (root, the CLIs' env)."""
    shutil.copytree(prepared, target, ignore=shutil.ignore_patterns("results"))
    env = nnunet_environment(target)
    for key, value in env.items():
        if key.startswith("nnUNet_") or key == "OMP_NUM_THREADS":
            monkeypatch.setenv(key, value)
    return target, env
