"""The demo's commands without paying for their imports each time.

Every command the demo runs (nnU-Net's planning, training, prediction; nnugen's) is a console script that starts a
Python with torch, scipy, scikit-image, SimpleITK, MONAI and matplotlib: about 5 s of imports on a 2-core machine
before any work, 16 times in a demo. Here the commands start from Python's forkserver (``multiprocessing``'s
"forkserver" start method) preloaded with those third-party libraries: a fresh interpreter that imported them once
and never ran a torch operation (so no OpenMP thread pool is copied into a child), forked for each command.

The child runs the console script's own entry point (``console_scripts`` of this environment) with the command's
arguments, the demo's current environment and working folder, and its output appended to the demo's log: the code
the command runs from a shell, with the imports already done. nnunetv2 and nnugen are imported in each child, never
preloaded, because nnU-Net reads its nnUNet_* folders from the environment when ``nnunetv2.paths`` is imported.

Off Linux, or for a command that is not a console script of this environment, the command runs as a subprocess.
"""

from __future__ import annotations

import multiprocessing
import os
import site
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import TextIO

# What nnU-Net's and nnugen's commands import, heaviest first; none of them imports nnunetv2.
PRELOAD = (
    "torch",
    "torch._dynamo",
    "scipy.ndimage",
    "skimage.morphology",
    "skimage.measure",
    "skimage.transform",
    "SimpleITK",
    "nibabel",
    "pandas",
    "sklearn.metrics",
    "matplotlib.pyplot",
    "seaborn",
    "monai",
    "batchgenerators",
    "batchgeneratorsv2.transforms.utils.compose",
    "dynamic_network_architectures",
    "acvl_utils",
    "blosc2",
)

# nnugen's start-up file in site-packages (setup.py): it adds nnugen's trainer folder to nnUNet_extTrainer when a
# Python starts. A child takes the demo's environment after its start, so it runs the file again, as a new Python would.
STARTUP_FILE = "nnugen_ext_trainer.pth"

_context = None


def _forkserver():
    """The preloaded forkserver context (started on first use, then shared by every command of this process)."""
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(list(PRELOAD))
    return _context


def _console_script(name: str):
    found = entry_points(group="console_scripts", name=name)
    return next(iter(found), None)


def become_the_command(environment: dict[str, str], folder: str, start_method: str) -> None:
    """In the forked child: the command's environment (with what nnugen's start-up file adds to it), working folder
    and multiprocessing start method (a child of the forkserver would otherwise start its own processes through a
    forkserver too, where a command run from a shell forks them)."""
    os.environ.clear()
    os.environ.update(environment)
    _run_startup_file()
    os.chdir(folder)
    multiprocessing.set_start_method(start_method, force=True)


def _run_startup_file() -> None:
    """Run nnugen's start-up file with the command's environment, as the interpreter of a shell run would."""
    for folder in dict.fromkeys([*site.getsitepackages(), site.getusersitepackages()]):
        if os.path.isfile(os.path.join(folder, STARTUP_FILE)):
            site.addpackage(folder, STARTUP_FILE, set(sys.path))


def _run_console_script(argv: list[str], log: str, environment: dict[str, str], folder: str,
                        start_method: str) -> None:
    """In the forked child: become the command ``argv`` with its output appended to ``log``."""
    become_the_command(environment, folder, start_method)
    descriptor = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)
    sys.argv = list(argv)
    sys.exit(_console_script(Path(argv[0]).name).load()())


class PreloadedCommand:
    """A command running in a child of the preloaded forkserver, with ``subprocess.Popen``'s ``poll`` / ``wait`` /
    ``returncode`` (a negative code is the signal that ended it)."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.args = command
        self.process = _forkserver().Process(
            target=_run_console_script,
            args=(command, str(Path(log).resolve()), dict(os.environ), os.getcwd(), multiprocessing.get_start_method()),
        )
        self.process.start()

    @property
    def returncode(self) -> int | None:
        return self.process.exitcode

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self.process.join(timeout)
        if self.process.exitcode is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.process.exitcode


def preloadable(command: list[str]) -> bool:
    """Whether ``command`` can start from the preloaded forkserver: on Linux, a console script of this environment."""
    return sys.platform.startswith("linux") and _console_script(Path(command[0]).name) is not None


def start_command(command: list[str], stream: TextIO) -> PreloadedCommand | subprocess.Popen:
    """Start ``command`` with its output appended to the file open as ``stream`` (flushed first)."""
    stream.flush()
    if preloadable(command):
        return PreloadedCommand(command, Path(stream.name))
    return subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT)


def start_forkserver() -> None:
    """Start the preloaded forkserver now (it imports PRELOAD in its own process, alongside whatever runs next)."""
    if sys.platform.startswith("linux"):
        _forkserver()
        from multiprocessing import forkserver

        forkserver.ensure_running()
