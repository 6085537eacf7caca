"""The shape of the code, counted the same way before and after a refactoring (docs/architecture.md, "Measured").

Over the package source (``nnugen/``, ``nnugen_planner/``, ``entrypoints/``; tests, benchmarks and docs left out):

- trainer names: lines holding a quoted nnugen trainer class name (``"NnugenDiffSegTrainer"``, ...), the places that
  must change when a trainer is added or renamed (``nnunet_ext``'s ``__all__`` excluded: nnU-Net's lookup needs it);
- results layout: lines that format nnU-Net's model folder layout themselves (``__{`` / ``}__`` / ``fold_{`` inside
  an f-string);
- task lists: lines that spell three or more task names in quotes (a table of tasks, or a copy of one);
- files over 300 lines, and functions over 60 lines (``ast``, decorators and docstrings included).

    python benchmarks/code_shape.py [ROOT]            # ROOT: a checkout (default: this one)
"""

from __future__ import annotations

import argparse
import ast
import json
import re
from pathlib import Path

SOURCES = ("nnugen", "nnugen_planner", "entrypoints")
TRAINER_NAME = re.compile(r"""["']Nnugen\w*Trainer\w*["']""")
LAYOUT = re.compile(r"""f["'][^"']*(__\{|\}__|fold_\{)""")
TASK_NAMES = ("seg", "segmentation", "ddpm", "adapter", "autoencoder", "ldm", "anomaly", "anomaly_adapter", "baseline")
QUOTED = re.compile(r"""["'](\w+)["']""")


def _files(root: Path) -> list[Path]:
    return sorted(p for folder in SOURCES for p in (root / folder).rglob("*.py"))


def _long_functions(path: Path, limit: int) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if node.end_lineno - start + 1 > limit:
                found.append(f"{node.name} ({node.end_lineno - start + 1})")
    return found


def code_shape(root: Path) -> dict:
    trainer_lines, layout_lines, task_lines, long_files, long_functions = [], [], [], [], []
    for path in _files(root):
        name = str(path.relative_to(root))
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            where = f"{name}:{number}"
            if TRAINER_NAME.search(line) and "nnunet_ext" not in name:
                trainer_lines.append(where)
            if LAYOUT.search(line):
                layout_lines.append(where)
            if len({m for m in QUOTED.findall(line) if m in TASK_NAMES}) >= 3:
                task_lines.append(where)
        if len(lines) > 300:
            long_files.append(f"{name} ({len(lines)})")
        long_functions += [f"{name}: {f}" for f in _long_functions(path, 60)]

    def files_of(places: list[str]) -> int:
        return len({p.split(":")[0] for p in places})

    return {
        "trainer_name_lines": len(trainer_lines), "trainer_name_files": files_of(trainer_lines),
        "layout_lines": len(layout_lines), "layout_files": files_of(layout_lines),
        "task_list_lines": len(task_lines), "task_list_files": files_of(task_lines),
        "files_over_300_lines": long_files, "functions_over_60_lines": long_functions,
        "places": {"trainer_names": trainer_lines, "layout": layout_lines, "task_lists": task_lines},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    print(json.dumps(code_shape(args.root), indent=1))


if __name__ == "__main__":
    main()
