"""The demo's progress bars: a tqdm bar on the terminal for every training, prediction and sampling the demo runs,
while the command's own output goes to the demo's log.

The commands run in their own processes with their output in the log file, so the demo cannot draw their bars. It
watches what they write instead: a training's ``training_progress.json`` (every nnugen trainer writes it on rank 0,
the demo's nnU-Net baseline included, as ``NnugenBaselineTrainer``; nnugen/trainers/training_progress.py), and the
case files a prediction or ``nnugen_sample`` writes one by one. Forwarding the commands' own bars instead would
interleave them with the log and needs a terminal in the subprocess; a file is read the same way under any launcher.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from nnugen.trainers.epoch_progress import title
from nnugen.trainers.training_progress import PROGRESS_FILE, read_training_progress

POLL_SECONDS = 0.5


@dataclass(frozen=True)
class Done:
    """What a watched command has done: ``done`` of ``total`` units, the bar's title and its text after the bar."""
    done: int
    total: int
    title: str
    note: str = ""


Watch = Callable[[], "Done | None"]


def training_watch(fold_folder: Path) -> Watch:
    """The training writing ``fold_folder``: the run's steps, ``epoch i/N`` and the smoothed loss. A progress file
    left by an earlier run is removed first, so the bar starts at the new run's first report."""
    (Path(fold_folder) / PROGRESS_FILE).unlink(missing_ok=True)

    def watch() -> Done | None:
        progress = read_training_progress(fold_folder)
        if progress is None:
            return None
        loss = "" if progress.loss is None else f", loss {progress.loss:.4g}"
        return Done(progress.steps_done, progress.steps_total, title(progress),
                    f"step {progress.iteration}/{progress.iterations}{loss}")

    return watch


def files_watch(folder: Path, names: Sequence[str], title: str) -> Watch:
    """A command writing the files ``names`` into ``folder`` (one per case): how many exist."""
    def watch() -> Done:
        return Done(sum((Path(folder) / name).is_file() for name in names), len(names), title)

    return watch


def prediction_watch(images: Path, output: Path, title: str = "cases") -> Watch:
    """A prediction of nnU-Net's raw ``images`` folder (``CASE_0000.nii.gz``, ...) writing ``CASE.nii.gz`` into
    ``output``."""
    suffix = "_0000.nii.gz"
    cases = sorted(p.name[: -len(suffix)] for p in Path(images).glob(f"*{suffix}"))
    return files_watch(output, [f"{case}.nii.gz" for case in cases], title)


def follow(process, watch: Watch, file: TextIO | None = None) -> int:
    """Wait for the started ``process`` (``subprocess.Popen``'s ``poll`` / ``wait``) while a tqdm bar (on ``file``,
    default stderr) follows ``watch`` every POLL_SECONDS; returns the exit code."""
    from tqdm import tqdm

    with tqdm(total=None, file=file, dynamic_ncols=True, mininterval=POLL_SECONDS) as bar:
        while True:
            finished = process.poll() is not None
            show(bar, watch())
            if finished:
                return process.returncode
            try:
                process.wait(POLL_SECONDS)
            except subprocess.TimeoutExpired:
                pass


def show(bar, done: Done | None) -> None:
    """Move ``bar`` (tqdm) to ``done``; nothing before the command reported anything."""
    if done is None:
        return
    bar.total = done.total
    bar.set_description_str(done.title, refresh=False)
    bar.set_postfix_str(done.note, refresh=False)
    bar.update(done.done - bar.n)
    bar.refresh()
