"""Typed, frozen settings sections read from JSON: ``Section.from_dict`` rejects unknown keys and wrong types with
a ValueError naming the key, and the small validation helpers every section's ``__post_init__`` uses. Pure Python
(no torch): the planner and the CLIs' ``--help`` import it."""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from typing import Any


def fail(where: str, message: str) -> None:
    raise ValueError(f"{where}: {message}")


def check_choice(where: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        fail(where, f"{value!r} is not one of {', '.join(choices)}")


def check_range(where: str, value: float, low: float | None = None, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(where, f"expected a number, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"in [{low}, {high}]" if high is not None else f">= {low}"
        fail(where, f"{value!r} must be {bounds}")


class Section:
    """Shared (de)serialisation: ``from_dict`` rejects unknown keys and converts lists to tuples."""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "") -> Section:
        where = where or cls.__name__
        data = {} if data is None else data
        if not isinstance(data, dict):
            fail(where, f"expected a mapping, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            fail(where, f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}")
        kwargs = {name: _convert(hints[name], value, f"{where}.{name}") for name, value in data.items()}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as error:  # a nested value of the wrong kind, or a range check: say where
            raise ValueError(f"{where}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, Section):
        return hint.from_dict(value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            fail(where, f"expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    wrong_bool = hint in (int, float) and isinstance(value, bool)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or wrong_bool):
        fail(where, f"expected {hint.__name__}, got {value!r}")
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``update`` written over it, recursively for nested mappings."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
