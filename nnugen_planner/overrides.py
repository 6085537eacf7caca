"""User overrides of the planned settings: ``--set task.section.field=value`` on the command line, and YAML files
(``--overrides FILE.yaml``, see templates/) of the form ``{task: {section: {field: value}}}`` for every planned
configuration, optionally with ``configurations: {NAME: {task: ...}}`` for one configuration only. Values are
parsed as YAML scalars (``true``, ``5``, ``1e-4``, ``[1, 2]``). Validation happens afterwards, in nnugen.config."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from nnugen.config import TASK_SECTIONS
from nnugen.folders.dataset_folders import InputError

SECTION_ROOTS = (*TASK_SECTIONS, "intensity")


class _YamlLoader(yaml.SafeLoader):
    """PyYAML follows YAML 1.1, where a float needs a dot (``1e-4`` stays a string); read it as a number, as YAML 1.2
    does, since that is how learning rates and weights are written."""


_YamlLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
                                  list("-+0123456789"))


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)  # a SafeLoader: no arbitrary objects


def parse_set(assignment: str) -> dict[str, Any]:
    """``"segmentation.sampler.steps=10"`` -> ``{"tasks": {"segmentation": {"sampler": {"steps": 10}}}}``."""
    if "=" not in assignment:
        raise InputError(f"--set {assignment!r}: expected KEY=VALUE, e.g. segmentation.sampler.steps=10")
    key, _, text = assignment.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if len(parts) < 2 or parts[0] not in SECTION_ROOTS:
        raise InputError(f"--set {assignment!r}: the key must start with one of {', '.join(SECTION_ROOTS)} and "
                            "name a field, e.g. segmentation.sampler.steps=10")
    try:
        value = _load_yaml(text) if text.strip() else ""
    except yaml.YAMLError:
        raise InputError(f"--set {assignment!r}: the value is not a valid YAML scalar or list") from None
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    return _to_section_layout(nested)


def _to_section_layout(tree: dict[str, Any]) -> dict[str, Any]:
    tasks = {k: v for k, v in tree.items() if k in TASK_SECTIONS}
    result: dict[str, Any] = {"tasks": tasks} if tasks else {}
    if "intensity" in tree:
        result["intensity"] = tree["intensity"]
    return result


def load_overrides_file(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Returns (overrides for every configuration, overrides per configuration name)."""
    if not path.is_file():
        raise InputError(f"--overrides {path}: no such file")
    try:
        tree = _load_yaml(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise InputError(f"--overrides {path} is not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(tree, dict):
        raise InputError(f"--overrides {path}: expected a mapping of task names to settings")
    per_configuration = tree.pop("configurations", {}) or {}
    if not isinstance(per_configuration, dict) or not all(isinstance(v, dict | None) for v in
                                                          per_configuration.values()):
        raise InputError(f"--overrides {path}: configurations: expected a mapping of configuration names to "
                         "{task: settings} mappings")
    unknown = sorted(map(str, set(tree) - set(SECTION_ROOTS)))
    if unknown:
        raise InputError(f"--overrides {path}: unknown top-level key(s) {', '.join(unknown)}; "
                            f"use {', '.join(SECTION_ROOTS)} or configurations")
    return _to_section_layout(tree), {name: _to_section_layout(v or {}) for name, v in per_configuration.items()}
