"""The demo's commands start from a forkserver that imported torch and the other heavy libraries once
(nnugen/demo/preloaded_commands.py): the child must be the console script itself, with the demo's current environment,
working folder, exit code and output, exactly as when the command runs from a shell."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import pytest

from nnugen.demo.commands import cli, run_logged
from nnugen.demo.preloaded_commands import (
    PRELOAD,
    PreloadedCommand,
    become_the_command,
    start_command,
    start_forkserver,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the forkserver path is Linux only")


def test_a_console_script_runs_preloaded_with_the_demos_environment_and_folder(tmp_path, monkeypatch):
    start_forkserver()  # the server keeps the environment and folder it started with
    monkeypatch.chdir(tmp_path)
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    log = tmp_path / "log.txt"
    with open(log, "a") as stream:
        process = start_command([cli("nnugen_plan"), "-d", "999", "-c", "2d"], stream)
        assert isinstance(process, PreloadedCommand)
        assert process.wait(60) == 1 and process.returncode == 1 and process.poll() == 1
    text = log.read_text()
    assert text.startswith("nnugen_plan: error: no dataset with ID 999")  # the entry point's own one-line error
    assert f"nnUNet_preprocessed={tmp_path / 'nnUNet_preprocessed'}" in text  # this test's environment

    with open(log, "a") as stream:
        assert start_command([cli("nnugen_plan"), "--help"], stream).wait(60) == 0
    assert "usage: nnugen_plan" in log.read_text()


def test_the_output_equals_the_commands_own_from_a_shell(tmp_path):
    log = tmp_path / "log.txt"
    command = [cli("nnugen_evaluate"), "--help"]
    run_logged(command, log)
    shell = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    assert log.read_text() == f"\n$ {' '.join(command)}\n{shell}"


def test_anything_else_runs_as_a_subprocess(tmp_path):
    with open(tmp_path / "log.txt", "a") as stream:
        process = start_command([sys.executable, "-c", "print('plain')"], stream)
        assert isinstance(process, subprocess.Popen) and process.wait() == 0
    assert (tmp_path / "log.txt").read_text() == "plain\n"


def test_nothing_preloaded_reads_nnunets_folders():
    """nnunetv2.paths reads nnUNet_raw & co. at import: a preloaded nnunetv2 would pin the server's folders."""
    script = ("import sys\nfor name in sys.argv[1:]: __import__(name)\n"
              "print(sorted(m for m in sys.modules if m.startswith(('nnunetv2', 'nnugen'))))")
    result = subprocess.run([sys.executable, "-c", script, *PRELOAD], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _probe(environment: dict[str, str], folder: str, start_method: str, report: str) -> None:
    become_the_command(environment, folder, start_method)
    with open(report, "w") as stream:
        stream.write(f"{multiprocessing.get_start_method()} {os.getcwd()} {os.environ.get('NNUGEN_PROBE')}")


def test_the_child_starts_its_own_processes_as_a_shell_run_would(tmp_path, monkeypatch):
    """A forkserver child inherits "forkserver" as its start method; nnU-Net's data loaders then would not fork."""
    start_forkserver()
    monkeypatch.setenv("NNUGEN_PROBE", "seen")
    context = multiprocessing.get_context("forkserver")
    shell = subprocess.run([sys.executable, "-c", "import multiprocessing; print(multiprocessing.get_start_method())"],
                           capture_output=True, text=True, check=True).stdout.strip()
    report = tmp_path / "report.txt"
    process = context.Process(target=_probe, args=(dict(os.environ), str(tmp_path), shell, str(report)))
    process.start()
    process.join(60)
    assert process.exitcode == 0 and report.read_text() == f"{shell} {tmp_path} seen"


def _trainer_probe(environment: dict[str, str], folder: str, start_method: str, report: str) -> None:
    become_the_command(environment, folder, start_method)
    with open(report, "w") as stream:
        stream.write(os.environ.get("nnUNet_extTrainer", "unset"))


def test_the_child_finds_nnugens_trainers_as_a_shell_run_would(tmp_path, monkeypatch):
    """A shell run's Python adds nnugen's trainer folder to nnUNet_extTrainer at start (nnugen_ext_trainer.pth); a child
    that takes an environment without it must add it too, or nnUNetv2_predict cannot find NnugenAnomalyTrainer."""
    start_forkserver()
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    shell = subprocess.run([sys.executable, "-c", "import os; print(os.environ['nnUNet_extTrainer'])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert shell.endswith(os.path.join("nnugen", "nnunet_ext"))
    report = tmp_path / "report.txt"
    process = multiprocessing.get_context("forkserver").Process(
        target=_trainer_probe, args=(dict(os.environ), str(tmp_path), "fork", str(report)))
    process.start()
    process.join(60)
    assert process.exitcode == 0 and report.read_text() == shell
