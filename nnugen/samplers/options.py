"""The options each sampler takes beyond the shared signature, so callers pass settings without special cases."""

from __future__ import annotations

from typing import Any

SAMPLER_OPTIONS: dict[str, tuple[str, ...]] = {"ddpm": (), "ddim": ("eta",), "dpm_solver++": ()}


def sampler_options(name: str, **settings: Any) -> dict[str, Any]:
    """The subset of ``settings`` that sampler ``name`` accepts, e.g. ``eta`` for DDIM only."""
    return {key: settings[key] for key in SAMPLER_OPTIONS.get(name, ()) if key in settings}
