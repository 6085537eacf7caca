"""The demo's progress bars (nnugen/demo/progress_follow.py): a command runs with its output in the log while a bar
follows the progress file a trainer writes, or the case files a prediction or nnugen_sample writes."""

from __future__ import annotations

import io
import sys
import textwrap

import pytest

from nnugen.demo.commands import run_logged
from nnugen.demo.preloaded_commands import start_command
from nnugen.demo.progress_follow import Done, files_watch, follow, prediction_watch, training_watch
from nnugen.trainers.training_progress import PROGRESS_FILE, TrainingProgress, write_training_progress


def _fake_training(folder) -> list[str]:
    """A subprocess that prints like nnU-Net and reports as a trainer does, epoch 2 of 2 last."""
    script = textwrap.dedent(f"""
        from nnugen.trainers.training_progress import TrainingProgress, write_training_progress
        print("Epoch 0", flush=True)
        write_training_progress({str(folder)!r}, TrainingProgress(0, 2, 3, 5, 0.5))
        print("Epoch 1", flush=True)
        write_training_progress({str(folder)!r}, TrainingProgress(2, 2, 0, 5, 0.25, finished=True))
    """)
    return [sys.executable, "-c", script]


def test_a_training_bar_follows_the_progress_file_and_the_output_goes_to_the_log(tmp_path):
    write_training_progress(tmp_path, TrainingProgress(9, 9, 0, 1, 1.0, finished=True))  # an earlier run's
    watch = training_watch(tmp_path)
    assert not (tmp_path / PROGRESS_FILE).exists() and watch() is None
    screen, log = io.StringIO(), tmp_path / "log.txt"
    with open(log, "w") as stream:
        assert follow(start_command(_fake_training(tmp_path), stream), watch, file=screen) == 0
    assert log.read_text() == "Epoch 0\nEpoch 1\n"
    last = [text for text in screen.getvalue().split("\r") if text.strip()][-1]  # the final state stays
    assert last.startswith("epoch 2/2: 100%") and "10/10 [" in last and last.rstrip().endswith("step 0/5, loss 0.25]")
    assert watch() == Done(10, 10, "epoch 2/2", "step 0/5, loss 0.25")


def test_a_prediction_is_followed_by_its_case_files(tmp_path):
    images, output = tmp_path / "imagesTs", tmp_path / "out"
    images.mkdir()
    output.mkdir()
    for case in ("b", "a"):
        (images / f"{case}_0000.nii.gz").touch()
    (images / "a_0001.nii.gz").touch()  # a second channel is the same case
    watch = prediction_watch(images, output)
    assert watch() == Done(0, 2, "cases")
    (output / "a.nii.gz").touch()
    (output / "a_entropy.nii.gz").touch()
    assert watch() == Done(1, 2, "cases")
    assert files_watch(output, ["a.nii.gz", "z.nii.gz"], "samples")() == Done(1, 2, "samples")


def test_a_failing_command_names_its_log(tmp_path):
    log = tmp_path / "log.txt"
    with pytest.raises(RuntimeError, match=r"python.* failed \(exit 3\); see .*log\.txt"):
        run_logged([sys.executable, "-c", "raise SystemExit(3)"], log, files_watch(tmp_path, ["x"], "cases"))
    assert "raise SystemExit(3)" in log.read_text()
