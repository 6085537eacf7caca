"""The console scripts, run as a user runs them: ``--help`` is fast and torch-free; bad input gives exit code 1 (2 for
argparse's usage errors), one line on stderr starting with the program's name, and writes nothing."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nnugen.tasks import TASKS

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120


def _script(name: str) -> str:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"console script {name} is not installed next to {sys.executable}")
        return found
    return str(path)


def _run(program: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([_script(program), *args], capture_output=True, text=True, timeout=TIMEOUT,
                          env=dict(os.environ) if env is None else env)


def _one_line_error(result: subprocess.CompletedProcess, program: str, code: int = 1) -> str:
    assert result.returncode == code, result.stdout + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{program}: error: "), lines[0]
    return lines[0]


def _nnugen_plans_files(root: Path) -> list[Path]:
    return sorted(root.rglob("nnugenPlans.json"))


# --- --help ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("program", ["nnugen_plan", "nnugen_check", "nnugen_train", "nnugen_evaluate"])
def test_help_exits_zero(program):
    result = _run(program, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {program}")
    assert result.stderr == ""


@pytest.mark.parametrize("module", ["plan", "check", "train", "evaluate"])
def test_help_does_not_import_torch(module):
    code = (
        "import sys\n"
        f"from nnugen.entrypoints.{module} import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "heavy = sorted(m for m in ('torch', 'nnunetv2', 'monai') if m in sys.modules)\n"
        "sys.exit(f'imported {heavy}' if heavy else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr


# --- nnugen_plan -------------------------------------------------------------------------------------------------


def test_plan_writes_nnugen_plans_without_torch(fake_preprocessed):
    folder = fake_preprocessed("anisotropic")
    result = _run("nnugen_plan", "-d", "901", "-c", "3d")
    assert result.returncode == 0, result.stderr
    assert "dataset check skipped" in result.stdout  # nnUNet_raw is unset
    assert f"nnugen_plan: wrote {folder / 'nnugenPlans.json'}" in result.stdout
    plans = json.loads((folder / "nnugenPlans.json").read_text(encoding="utf-8"))
    assert plans["configurations"]["3d_fullres"]["nnugen"]["tasks"]["segmentation"]["denoiser"]["strides"][1] == [
        1, 2, 2]

    code = ("import sys\nfrom nnugen.entrypoints.plan import main\nrc = main(['-d', '901', '--overwrite'])\n"
            "sys.exit(rc or ('torch imported' if 'torch' in sys.modules else 0))\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stdout + run.stderr


def test_plan_accepts_set_and_overrides(fake_preprocessed, tmp_path):
    folder = fake_preprocessed("isotropic")
    overrides = tmp_path / "o.yaml"
    overrides.write_text("ddpm:\n  sampler: {steps: 30}\n", encoding="utf-8")
    result = _run("nnugen_plan", "-d", "Dataset901_Fake", "--set", "segmentation.sampler.seeds=4",
                  "--set", "ddpm.training.initial_lr=2e-4", "--overrides", str(overrides), "--gpu-memory-gb", "24")
    assert result.returncode == 0, result.stderr
    tasks = json.loads((folder / "nnugenPlans.json").read_text())["configurations"]["3d_fullres"]["nnugen"]["tasks"]
    assert tasks["segmentation"]["sampler"]["seeds"] == 4
    assert tasks["ddpm"]["training"]["initial_lr"] == 2e-4 and tasks["ddpm"]["sampler"]["steps"] == 30
    assert tasks["baseline"]["memory"]["budget_gb"] == 24


def _no_plans_file(folder: Path) -> None:
    (folder / "nnUNetPlans.json").unlink()


def _broken_plans(folder: Path) -> None:
    text = (folder / "nnUNetPlans.json").read_text(encoding="utf-8")
    (folder / "nnUNetPlans.json").write_text(text[: len(text) // 2], encoding="utf-8")


def _broken_dataset_json(folder: Path) -> None:
    (folder / "dataset.json").write_text('{"labels": {"background": 0,}}', encoding="utf-8")


def _plans_is_a_list(folder: Path) -> None:
    (folder / "nnUNetPlans.json").write_text("[1, 2]", encoding="utf-8")


PLAN_ERRORS = {
    "unknown dataset": (["-d", "555"], None, r"no dataset with ID 555 \(Dataset555_\*\) found"),
    "unknown dataset name": (["-d", "Dataset555_Missing"], None, r"Dataset555_Missing does not exist; run "
                                                                  r"nnUNetv2_plan_and_preprocess"),
    "bad dataset": (["-d", "hippocampus"], None, r"neither an ID nor a name like Dataset004_Name"),
    "no nnUNetPlans.json": (["-d", "901"], _no_plans_file, r"nnUNetPlans\.json is missing; run "
                                                           r"nnUNetv2_plan_and_preprocess -d 901 first"),
    "malformed plans": (["-d", "901"], _broken_plans, r"Dataset901_Fake/nnUNetPlans\.json is not valid JSON "
                                                      r"\(line \d+"),
    "malformed dataset.json": (["-d", "901"], _broken_dataset_json, r"Dataset901_Fake/dataset\.json is not valid JSON"),
    "plans not an object": (["-d", "901"], _plans_is_a_list, r"nnUNetPlans\.json does not hold a JSON object"),
    "unknown configuration": (["-d", "901", "-c", "3d_highres"], None,
                              r"unknown configuration '3d_highres'; this plan has 2d, 3d_lowres, 3d_fullres"),
    "budget too small": (["-d", "901", "--gpu-memory-gb", "1.5"], None, r"more than the budget of 1.5 GB: raise "
                                                                      r"--gpu-memory-gb"),
    "negative budget": (["-d", "901", "--gpu-memory-gb", "-1"], None, r"--gpu-memory-gb -1(\.0)?: must be a positive"),
    "bad --set key": (["-d", "901", "--set", "segmentation.sampler.stepz=3"], None,
                      r"segmentation\.sampler: unknown key\(s\) stepz; valid keys:"),
    "bad --set value": (["-d", "901", "--set", "segmentation.sampler.steps=many"], None,
                        r"segmentation\.sampler\.steps: expected int, got 'many'"),
    "--set out of range": (["-d", "901", "--set", "anomaly.anomaly.strengths=[2.0]"], None,
                           r"strength 2\.0 is outside \(0, 1\]"),
    "--set without =": (["-d", "901", "--set", "segmentation.sampler.steps"], None, r"expected KEY=VALUE"),
    "missing overrides": (["-d", "901", "--overrides", "nowhere.yaml"], None, r"--overrides nowhere\.yaml: no such"),
}


MALFORMED_FILES = {"malformed plans", "malformed dataset.json", "plans not an object"}


@pytest.mark.parametrize("case", list(PLAN_ERRORS))
def test_plan_bad_input_is_one_line_and_writes_nothing(fake_preprocessed, case):
    args, damage, message = PLAN_ERRORS[case]
    folder = fake_preprocessed("anisotropic")
    if damage is not None:
        damage(folder)
    code = 2 if case in MALFORMED_FILES else 1  # a file that does not parse is malformed: exit code 2
    line = _one_line_error(_run("nnugen_plan", *args), "nnugen_plan", code)
    assert pytest.importorskip("re").search(message, line), line
    assert _nnugen_plans_files(folder.parent) == []


def test_plan_without_nnunet_preprocessed(fake_preprocessed, monkeypatch):
    folder = fake_preprocessed("isotropic")
    monkeypatch.delenv("nnUNet_preprocessed")
    line = _one_line_error(_run("nnugen_plan", "-d", "901"), "nnugen_plan")
    assert "nnUNet_preprocessed is not set" in line
    assert _nnugen_plans_files(folder.parent) == []


@pytest.mark.parametrize("args, message", [
    ([], "the following arguments are required: -d"),
    (["-d", "901", "--gpu-memory-gb", "lots"], "argument --gpu-memory-gb: invalid float value: 'lots'"),
])
def test_plan_usage_errors_exit_two(fake_preprocessed, args, message):
    folder = fake_preprocessed("isotropic")
    result = _run("nnugen_plan", *args)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"nnugen_plan: error: {message}"
    assert _nnugen_plans_files(folder.parent) == []


def test_check_unknown_dataset_is_one_line(fake_preprocessed):
    fake_preprocessed("isotropic")
    line = _one_line_error(_run("nnugen_check", "-d", "901"), "nnugen_check")
    assert "not found under nnUNet_raw" in line


def test_demo_with_a_bad_device_fails_before_writing(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    line = _one_line_error(_run("nnugen_demo", "--work-dir", str(tmp_path / "demo"), "-device", "tpu", env=env),
                           "nnugen_demo")
    assert line.startswith("nnugen_demo: error: -device tpu: choose cuda, cpu"), line
    assert list(tmp_path.iterdir()) == []


def test_check_reports_broken_files_on_stdout_and_one_error_line(tmp_path):
    from nnugen.demo.phantom import PhantomSpec, write_phantom_dataset

    folder = write_phantom_dataset(tmp_path, 902, "Check", n_train=2, spec=PhantomSpec(shape=(16, 16)))
    env = dict(os.environ, nnUNet_raw=str(tmp_path))
    clean = _run("nnugen_check", "-d", "902", env=env)
    assert clean.returncode == 0 and clean.stderr == "", clean.stderr
    assert clean.stdout.splitlines()[-1] == "nnugen_check: Dataset902_Check: 0 problem(s)"
    broken = folder / "imagesTr" / "Check_001_0000.nii.gz"
    broken.write_bytes(broken.read_bytes()[:200])
    before = sorted(tmp_path.rglob("*"))
    result = _run("nnugen_check", "-d", "902", env=env)
    line = _one_line_error(result, "nnugen_check")
    assert "Dataset902_Check: 1 problem(s), listed on stdout; replace or remove those files" in line
    assert [row.split(":")[0] for row in result.stdout.splitlines()] == [str(broken)]
    assert sorted(tmp_path.rglob("*")) == before


# --- nnugen_train: every failure is found before nnU-Net's training run starts -----------------------------------


def _exported_trainers() -> set[str]:
    """The trainer names nnugen/nnunet_ext re-exports, read without importing."""
    tree = ast.parse((ROOT / "nnugen" / "nnunet_ext" / "nnugen_trainers.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


BUILT = [t.name for t in TASKS.values() if t.trainer in _exported_trainers()]


@pytest.fixture(scope="module")
def train_failures(tmp_path_factory, preprocessed_dataset_writer):
    """Runs the failing nnugen_train calls at once (each imports torch and nnU-Net's trainers before it fails: several
    seconds on 2 cores) and returns ({case: CompletedProcess}, the nnUNet_results folder). Plans without an nnugen
    section are covered by tests/test_config.py (section_of)."""
    if not BUILT:
        pytest.skip("no nnugen trainer is built yet")
    base = tmp_path_factory.mktemp("train_cli")
    preprocessed, results = base / "nnUNet_preprocessed", base / "nnUNet_results"
    preprocessed.mkdir()
    results.mkdir()
    preprocessed_dataset_writer(preprocessed, "isotropic", 901)  # nnUNetPlans.json only: nnugen_plan never ran
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_raw"}
    env.update(nnUNet_preprocessed=str(preprocessed), nnUNet_results=str(results))

    cases = {
        "no nnugenPlans.json": ["901", "0", "3d", "--task", BUILT[0], "-device", "cpu"],
        "unknown task": ["901", "0", "3d", "--task", "diffusion"],
    }
    processes = {case: subprocess.Popen([_script("nnugen_train"), *args], stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True, env=env)
                 for case, args in cases.items()}
    outcomes = {}
    for case, process in processes.items():
        try:
            stdout, stderr = process.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        outcomes[case] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return outcomes, results


def _train_error(train_failures, case: str, code: int = 1) -> str:
    outcomes, results = train_failures
    if case not in outcomes:
        pytest.skip(f"no such case here: {case}")
    assert list(results.iterdir()) == [], "nnU-Net's training run started"
    if code == 2:
        assert outcomes[case].returncode == 2, outcomes[case].stderr
        return outcomes[case].stderr.splitlines()[-1]
    return _one_line_error(outcomes[case], "nnugen_train")


def test_train_without_nnugen_plans_says_run_nnugen_plan(train_failures):
    line = _train_error(train_failures, "no nnugenPlans.json")
    assert "Dataset901_Fake/nnugenPlans.json is missing; run nnugen_plan -d 901 first" in line


def test_train_unknown_task_is_a_usage_error(train_failures):
    line = _train_error(train_failures, "unknown task", code=2)
    assert line.startswith("nnugen_train: error: argument --task: invalid choice: 'diffusion'")
