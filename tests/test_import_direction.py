"""The import direction of docs/architecture.md ("Layout and import direction"), checked on the source with ``ast``:
imports point down these rows or sideways within a row, never up::

    entrypoints/
    demo/  bids/                                          demo/ may import anomaly/, never the reverse
    run/  inference/  nnugen_planner/  nnunet_ext/        inference/ never imports trainers/ or the planner
    trainers/
    models/  evaluation/                                  evaluation/ imports models/, never trainers/
    folders/  tasks.py                                    no torch at import, except where a checkpoint is read
    diffusion/  samplers/  networks/  losses/  anomaly/   torch, never nnunetv2
    config.py  typed_section.py  atomic_files.py  seeding.py  patch_blocks.py

The planner and the light modules the CLIs' ``--help`` load import no torch (a runtime check in a fresh interpreter
confirms it for the transitive imports too). Every rule is one row of ``RULES``; the real test and the self-test (a
planted import of each forbidden module must be reported) run over the same rows."""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MATH_PACKAGES = ("nnugen/diffusion", "nnugen/samplers", "nnugen/networks", "nnugen/losses", "nnugen/anomaly")
CLI = ("nnugen.entrypoints", "entrypoints")
UPPER_LAYERS = ("nnugen.trainers", "nnugen.models", "nnugen.inference", "nnugen.run", *CLI)
TORCH_FREE_MODULES = ("nnugen/__init__.py", "nnugen/config.py", "nnugen/atomic_files.py", "nnugen/seeding.py",
                      "nnugen/patch_blocks.py", "nnugen/tasks.py", "nnugen/folders")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "entrypoints":
        parts.insert(0, "nnugen")  # installed as nnugen.entrypoints (setup.py's package_dir)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(path: Path, top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, imported module) of every import in ``path``; with ``top_level_only`` the imports that run when the
    module is imported (function bodies skipped: lazy imports there are allowed). ``from a import b`` yields both
    ``a`` and ``a.b`` (b may be a submodule); ``importlib.import_module("x")`` / ``__import__("x")`` count too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    module, is_package = _module_name(path), path.name == "__init__.py"
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if top_level_only and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, module, is_package)
            found.append((node.lineno, source))
            found.extend((node.lineno, f"{source}.{alias.name}") for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("import_module", "__import__"):
                found.append((node.lineno, node.args[0].value))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _files(*folders: str) -> list[Path]:
    files = []
    for folder in folders:
        path = ROOT / folder
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def _is(name: str, forbidden: tuple[str, ...]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in forbidden)


def _violations(files: list[Path], forbidden: tuple[str, ...], top_level_only: bool = False) -> list[str]:
    """One ``file:line imports module`` per offending import statement."""
    found: dict[tuple[Path, int], str] = {}
    for path in files:
        for line, name in _imports(path, top_level_only):
            if _is(name, forbidden):
                found.setdefault((path, line), f"{path.relative_to(ROOT)}:{line} imports {name}")
    return list(found.values())


@dataclass(frozen=True)
class Rule:
    """``files`` (folders or files under ROOT, minus ``exclude``) never import a module in ``forbidden`` (or below it);
    with ``top_level_only`` only the imports that run when the module is imported count."""

    id: str
    files: tuple[str, ...]
    forbidden: tuple[str, ...]
    top_level_only: bool = False
    exclude: tuple[str, ...] = ()

    def checked_files(self) -> list[Path]:
        return [path for path in _files(*self.files) if str(path.relative_to(ROOT)) not in self.exclude]

    def violations(self) -> list[str]:
        return _violations(self.checked_files(), self.forbidden, self.top_level_only)


RULES = (
    Rule("math-code-never-imports-nnunet-or-upper-layers", MATH_PACKAGES,
         ("nnunetv2", *UPPER_LAYERS, "nnugen.folders", "nnugen.tasks", "nnugen.evaluation", "nnugen.demo",
          "nnugen.bids", "nnugen_planner")),
    Rule("anomaly-never-imports-demo", ("nnugen/anomaly",), ("nnugen.demo",)),
    # the planner runs before any GPU work and in --help: nothing that pulls in torch, even lazily
    Rule("planner-imports-no-torch-nnunet-or-training-code", ("nnugen_planner",),
         ("torch", "nnunetv2", *UPPER_LAYERS, "nnugen.diffusion", "nnugen.samplers", "nnugen.networks",
          "nnugen.anomaly")),
    # checkpoint_files reads checkpoints: torch is its point
    Rule("light-modules-import-no-torch-at-module-level", TORCH_FREE_MODULES, ("torch", "nnunetv2"),
         top_level_only=True, exclude=("nnugen/folders/checkpoint_files.py",)),
    Rule("folders-and-tasks-never-import-the-layers-above", ("nnugen/folders", "nnugen/tasks.py"), UPPER_LAYERS),
    Rule("cli-modules-import-heavy-libraries-inside-main", ("entrypoints",),
         ("torch", "nnunetv2", "nnugen.trainers", "nnugen.models", "nnugen.inference"), top_level_only=True),
    Rule("trainers-never-import-the-layers-above", ("nnugen/trainers",), ("nnugen.run", "nnugen.inference", *CLI)),
    Rule("models-never-import-trainers-or-the-layers-above", ("nnugen/models",),
         ("nnugen.trainers", "nnugen.run", "nnugen.inference", "nnugen.evaluation", "nnugen.demo", *CLI)),
    Rule("evaluation-imports-models-never-trainers", ("nnugen/evaluation",),
         ("nnugen.trainers", "nnugen.run", "nnugen.inference", "nnugen.demo", *CLI)),
    Rule("inference-never-imports-trainers", ("nnugen/inference",), ("nnugen.trainers",)),
    Rule("inference-never-imports-the-planner", ("nnugen/inference",), ("nnugen_planner",)),
    Rule("nothing-in-the-package-imports-the-cli-layer", ("nnugen", "nnugen_planner"), CLI),
)


# --- the checker itself ---------------------------------------------------------------------------------------------


def test_checker_sees_every_kind_of_import(tmp_path, monkeypatch):
    package = tmp_path / "nnugen" / "samplers"
    package.mkdir(parents=True)
    source = package / "example.py"
    source.write_text(
        "import torch.nn as nn\n"
        "from ..trainers import base\n"
        "from . import ddim\n"
        "import importlib\n"
        "def lazy():\n"
        "    from nnunetv2.paths import nnUNet_raw\n"
        "    return importlib.import_module('nnugen.run.tasks')\n"
        "class Holder:\n"
        "    import numpy\n", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    everything = {name for _, name in _imports(source)}
    assert {"torch.nn", "nnugen.trainers", "nnugen.trainers.base", "nnugen.samplers.ddim", "nnunetv2.paths",
            "nnugen.run.tasks", "numpy"} <= everything
    top_level = {name for _, name in _imports(source, top_level_only=True)}
    assert "numpy" in top_level and "torch.nn" in top_level
    assert "nnunetv2.paths" not in top_level and "nnugen.run.tasks" not in top_level
    assert _violations([source], ("nnunetv2",)) == ["nnugen/samplers/example.py:6 imports nnunetv2.paths"]


@pytest.mark.parametrize("rule", RULES, ids=[rule.id for rule in RULES])
def test_each_rule_reports_a_planted_import_of_each_forbidden_module(rule, tmp_path, monkeypatch):
    """Under a fake ROOT, one file of the rule imports every forbidden module three ways (``import``, ``from ...
    import``, ``importlib.import_module``) at module level, and once lazily; each module-level line is reported, the
    lazy one exactly when the rule counts lazy imports too."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    target = next(entry for entry in rule.files if entry not in rule.exclude)
    path = tmp_path / target if target.endswith(".py") else tmp_path / target / "planted.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    planted = path.relative_to(tmp_path)
    lines, expected = ["import importlib"], []
    for module in rule.forbidden:
        for statement in (f"import {module}", f"from {module} import anything", f"importlib.import_module({module!r})"):
            lines.append(statement)
            expected.append(f"{planted}:{len(lines)} imports {module}")
    lines += ["def lazy():", f"    import {rule.forbidden[0]}"]
    if not rule.top_level_only:
        expected.append(f"{planted}:{len(lines)} imports {rule.forbidden[0]}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert rule.violations() == expected


def test_the_checked_packages_exist():
    assert _files("nnugen/diffusion", "nnugen/samplers", "nnugen/networks"), "no math code found: wrong ROOT?"
    assert _files("nnugen_planner") and _files("entrypoints")
    for rule in RULES:  # a typo in a row would check nothing
        assert all((ROOT / entry).exists() for entry in rule.files + rule.exclude), rule.id
        assert rule.checked_files(), rule.id


# --- the rules ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rule", RULES, ids=[rule.id for rule in RULES])
def test_import_direction(rule):
    assert rule.violations() == []


def test_planner_and_config_load_without_torch_at_runtime():
    code = (
        "import sys, pkgutil, importlib\n"
        "import nnugen, nnugen.config, nnugen.atomic_files, nnugen.seeding, nnugen.tasks\n"
        "import nnugen.folders.dataset_folders, nnugen.folders.model_folder\n"
        "import nnugen_planner, nnugen.entrypoints.plan, nnugen.entrypoints.train, nnugen.entrypoints.check\n"
        "for info in pkgutil.iter_modules(nnugen_planner.__path__):\n"
        "    importlib.import_module('nnugen_planner.' + info.name)\n"
        "heavy = sorted(m for m in ('torch', 'nnunetv2', 'monai') if m in sys.modules)\n"
        "print('heavy:', heavy)\n"
        "sys.exit(1 if heavy else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
