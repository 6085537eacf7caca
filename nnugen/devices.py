"""The one check of a device name a user typed (``-device`` of nnugen_train / nnugen_predict / nnugen_sample,
nnugen_demo). ``check_device_name`` needs no torch (the checks before anything is loaded);
``torch_device`` also checks that the device is there. ``usable_cpu_cores``: the cores a CPU run may use."""

from __future__ import annotations

import os

DEVICES = ("cuda", "cpu", "mps")


def check_device_name(name: str, flag: str = "-device") -> str:
    """``name`` if it is one of DEVICES, else ValueError naming ``flag`` and the choices."""
    if name not in DEVICES:
        raise ValueError(f"{flag} {name}: choose {', '.join(DEVICES)}")
    return name


def torch_device(name: str, flag: str = "-device"):
    """``name`` -> torch.device; ValueError when the name is unknown or that device is not there."""
    import torch

    check_device_name(name, flag)
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{flag} cuda: no CUDA GPU is visible; use {flag} cpu (or mps on Apple silicon)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{flag} mps: MPS is not available here; use {flag} cpu")
    return torch.device(name)


def usable_cpu_cores() -> int:
    """The cores this process may run on: its CPU affinity (what ``taskset``, a SLURM job's cpuset or a container's
    cpuset leave it) where the system reports one, else every core of the machine."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
