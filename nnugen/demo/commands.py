"""What the demo steps share: stage messages with elapsed time, the CLIs of this environment, commands run with
their output appended to the demo's log (started without their imports, preloaded_commands.py, and a progress bar
following a long one, progress_follow.py), and the nnUNet_* folders inside the work folder."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from nnugen.demo.preloaded_commands import start_command
from nnugen.demo.progress_follow import Watch, follow


class Stages:
    """Prints each stage with the time since the demo started, so a user sees where it is."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[nnugen_demo {time.monotonic() - self.start:6.0f} s] {message}", flush=True)


def cli(name: str) -> str:
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else name


def run_logged(command: list[str], log: Path, watch: Watch | None = None) -> None:
    """Run ``command`` with its output appended to ``log``; with ``watch``, a progress bar follows it on the terminal
    (progress_follow.py). RuntimeError naming the log when it fails."""
    with open(log, "a", encoding="utf-8") as stream:
        stream.write(f"\n$ {' '.join(command)}\n")
        process = start_command(command, stream)
        returncode = process.wait() if watch is None else follow(process, watch)
    if returncode != 0:
        raise RuntimeError(f"{Path(command[0]).name} failed (exit {returncode}); see {log}")


def set_nnunet_folders(work_dir: Path) -> dict[str, str]:
    """Point the nnUNet_* variables that are unset at folders inside the work folder (set ones are kept)."""
    chosen = {}
    for variable, folder in (("nnUNet_raw", "nnUNet_raw"), ("nnUNet_preprocessed", "nnUNet_preprocessed"),
                             ("nnUNet_results", "nnUNet_results")):
        if not os.environ.get(variable):
            os.environ[variable] = str((work_dir / folder).resolve())
        chosen[variable] = os.environ[variable]
        Path(os.environ[variable]).mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("nnUNet_def_n_proc", "2")
    os.environ.setdefault("nnUNet_n_proc_DA", "1")
    return chosen


def log_size(log: Path) -> int:
    """Where the log ends now (bytes): ``logged_commands(log, since=...)`` then lists what was run after it."""
    return Path(log).stat().st_size if Path(log).is_file() else 0


def logged_commands(log: Path, since: int = 0) -> list[str]:
    """The commands ``run_logged`` ran (its ``$ ...`` lines) after byte ``since`` of the log, for the report."""
    if not Path(log).is_file():
        return []
    with open(log, "rb") as stream:
        stream.seek(since)
        text = stream.read().decode("utf-8", errors="replace")
    return [line[2:] for line in text.splitlines() if line.startswith("$ ")]
