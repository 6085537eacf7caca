"""DESIGN.md's import direction, checked on the source with ``ast``:

    entrypoints -> planner / inference / run -> trainers -> models -> networks, diffusion, samplers, anomaly -> config

The math packages import torch, never nnunetv2; the planner and the light modules the CLIs' ``--help`` load import no
torch (a runtime check in a fresh interpreter confirms it for the transitive imports too)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MATH_PACKAGES = ("nnugen/diffusion", "nnugen/samplers", "nnugen/networks", "nnugen/losses", "nnugen/anomaly")
UPPER_LAYERS = ("nnugen.trainers", "nnugen.models", "nnugen.inference", "nnugen.run", "nnugen.entrypoints",
                "entrypoints")
TORCH_FREE_MODULES = ("nnugen/__init__.py", "nnugen/config.py", "nnugen/atomic_files.py", "nnugen/seeding.py")


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


def _ids(files: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in files]


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


def test_the_checked_packages_exist():
    assert _files("nnugen/diffusion", "nnugen/samplers", "nnugen/networks"), "no math code found: wrong ROOT?"
    assert _files("nnugen_planner") and _files("entrypoints")


# --- the rules ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _files(*MATH_PACKAGES), ids=_ids(_files(*MATH_PACKAGES)))
def test_math_code_never_imports_nnunet_or_upper_layers(path):
    assert _violations([path], ("nnunetv2", *UPPER_LAYERS)) == []


@pytest.mark.parametrize("path", _files("nnugen_planner"), ids=_ids(_files("nnugen_planner")))
def test_planner_imports_no_torch_nnunet_or_training_code(path):
    # the planner runs before any GPU work and in --help: nothing that pulls in torch, even lazily
    forbidden = ("torch", "nnunetv2", "nnugen.trainers", "nnugen.models", "nnugen.run", "nnugen.inference",
                 "nnugen.diffusion", "nnugen.samplers", "nnugen.networks", "nnugen.anomaly")
    assert _violations([path], forbidden) == []


@pytest.mark.parametrize("path", _files(*TORCH_FREE_MODULES), ids=_ids(_files(*TORCH_FREE_MODULES)))
def test_light_modules_import_no_torch_at_module_level(path):
    assert _violations([path], ("torch", "nnunetv2"), top_level_only=True) == []


@pytest.mark.parametrize("path", _files("entrypoints"), ids=_ids(_files("entrypoints")))
def test_cli_modules_import_heavy_libraries_inside_main(path):
    assert _violations([path], ("torch", "nnunetv2", "nnugen.trainers", "nnugen.models", "nnugen.inference"),
                       top_level_only=True) == []


def test_trainers_never_import_the_layers_above_them():
    assert _violations(_files("nnugen/trainers"), ("nnugen.run", "nnugen.inference", "nnugen.entrypoints",
                                                   "entrypoints")) == []


def test_models_never_import_trainers_or_the_layers_above():
    assert _violations(_files("nnugen/models"), ("nnugen.trainers", "nnugen.run", "nnugen.inference",
                                                 "nnugen.entrypoints", "entrypoints")) == []


def test_nothing_in_the_package_imports_the_cli_layer():
    assert _violations(_files("nnugen", "nnugen_planner"), ("nnugen.entrypoints", "entrypoints")) == []


def test_planner_and_config_load_without_torch_at_runtime():
    code = (
        "import sys, pkgutil, importlib\n"
        "import nnugen, nnugen.config, nnugen.atomic_files, nnugen.seeding, nnugen.run.tasks\n"
        "import nnugen_planner, nnugen.entrypoints.plan, nnugen.entrypoints.train, nnugen.entrypoints.check\n"
        "for info in pkgutil.iter_modules(nnugen_planner.__path__):\n"
        "    importlib.import_module('nnugen_planner.' + info.name)\n"
        "heavy = sorted(m for m in ('torch', 'nnunetv2', 'monai') if m in sys.modules)\n"
        "print('heavy:', heavy)\n"
        "sys.exit(1 if heavy else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
