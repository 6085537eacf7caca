"""Typed, frozen settings sections read from JSON: ``Section.from_dict`` rejects unknown keys, wrong types, null
where a value is needed and non-finite numbers (NaN, Infinity) with a ValueError naming the key, and the small
validation helpers every section's ``__post_init__`` uses. ``read_json_object`` checks a side file (denoiser.json,
latent.json, ...) against the same types, with errors ``FILE: field: what is wrong; what to do``, raised as
``MalformedFileError`` (a ValueError the CLIs report with exit code 2). Pure Python (no torch): the planner and the
CLIs' ``--help`` import it."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FINITE = "write a finite number (NaN and Infinity are not settings)"


class MalformedFileError(ValueError):
    """A settings or side file nnugen reads (the plans' nnugen section, denoiser.json, autoencoder.json, latent.json,
    threshold.json, sampling.json) holds what it cannot hold: one line ``FILE: field: what is wrong; what to do``.
    A ValueError, so every ``except ValueError`` still catches it; the CLIs exit with code 2 for it (1 for other
    bad input)."""


def fail(where: str, message: str) -> None:
    raise ValueError(f"{where}: {message}")


def check_choice(where: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        fail(where, f"{value!r} is not one of {', '.join(choices)}")


def check_range(where: str, value: float, low: float | None = None, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        fail(where, f"expected a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        fail(where, f"{value!r} is not a finite number; {FINITE}")
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
        unknown = sorted(map(str, set(data) - names))
        if unknown:
            fail(where, f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(names))}")
        kwargs = {name: _convert(hints[name], value, _field(where, name)) for name, value in data.items()}
        try:
            return cls(**kwargs)
        except (TypeError, ValueError, ArithmeticError) as error:  # a range check, or a value no check foresaw
            raise ValueError(f"{where}: {error}") from None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _field(where: str, name: str) -> str:
    """Where a field is: ``section.field``, or ``FILE: field`` at the top of a JSON file."""
    return f"{where}: {name}" if where.endswith(".json") else f"{where}.{name}"


def _convert(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if isinstance(hint, type) and issubclass(hint, Section):
        if value is None:  # from_dict would read null as the defaults, hiding a broken file
            fail(where, "expected a mapping, got None (null); write the section, or drop the key for the default")
        return hint.from_dict(value, where)
    if origin is dict or hint is dict:  # a free-form mapping (sampling.json's request): finite numbers only
        if not isinstance(value, dict):
            fail(where, f"expected a mapping, got {_short(value)}")
        for key, item in value.items():
            _convert(args[1] if args else Any, item, f"{where}.{key}")
        return value
    if hint is Any:
        if isinstance(value, float) and not math.isfinite(value):
            fail(where, f"{value!r} is not a finite number; {FINITE}")
        for i, item in enumerate(value) if isinstance(value, list) else ():
            _convert(Any, item, f"{where}[{i}]")
        return _convert(dict, value, where) if isinstance(value, dict) else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            fail(where, f"expected a list, got {_short(value)}")
        inner = args[0] if args else Any
        return tuple(_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        if abs(value) > 1e300:  # float() of a longer integer overflows
            fail(where, f"{_short(value)} is too large; {FINITE}")
        return float(value)
    wrong_bool = hint in (int, float) and isinstance(value, bool)
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or wrong_bool):
        fail(where, f"expected {hint.__name__}, got {_short(value)}")
    if hint is float and not math.isfinite(value):  # JSON's NaN / Infinity, YAML's .nan / .inf, 1e400
        fail(where, f"{value!r} is not a finite number; {FINITE}")
    return value


def _short(value: Any) -> str:
    """``repr`` cut to one short line, so that a huge or nested wrong value keeps the message to one line."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def read_json_object(path: Path, fields: Mapping[str, Any], fix: str) -> dict[str, Any]:
    """The JSON object in side file ``path``, checked against ``fields`` (key -> type, as a section's fields are
    typed: ``int``, ``float``, ``str``, ``tuple[int, ...]``, a ``Section``; ``X | None`` = may be left out); returned
    as read. Any other key, a missing key, a wrong type, NaN or Infinity: ValueError ``FILE: field: what is wrong;
    FIX`` (``fix``: what the user does about it, e.g. "train the autoencoder again")."""
    path = Path(path)
    where = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise MalformedFileError(f"{where}: not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
                                 f"{fix}") from None
    except (UnicodeDecodeError, RecursionError) as error:  # not UTF-8 text; nested deeper than Python parses
        raise MalformedFileError(f"{where}: cannot be read ({type(error).__name__}); {fix}") from None
    except OSError as error:
        raise ValueError(f"{where}: cannot be read ({error.strerror or type(error).__name__}); {fix}") from None
    try:
        if not isinstance(data, dict):
            fail(where, f"expected a JSON object, got {type(data).__name__}")
        unknown = sorted(map(str, set(data) - set(fields)))
        if unknown:
            fail(where, f"unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(fields))}")
        for name, hint in fields.items():
            if name in data:
                _convert(hint, data[name], _field(where, name))
            elif type(None) not in typing.get_args(hint):
                fail(_field(where, name), "missing")
    except ValueError as error:
        raise MalformedFileError(f"{error}; {fix}") from None
    return data


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
