"""Which training cases are healthy: the file that lists them (one case identifier per line, ``#`` comments), found as
``anomaly.healthy_cases_file`` or as ``healthy_cases.txt`` in the raw dataset folder. Without such a file the
trainer falls back to the labels (cases without foreground)."""

from __future__ import annotations

from pathlib import Path

HEALTHY_CASES_FILE = "healthy_cases.txt"


def read_case_list(path: Path) -> set[str]:
    """Case identifiers of a healthy-cases file: one per line; blank lines and ``#`` comments ignored."""
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text(encoding="utf-8").splitlines())
    return {line for line in lines if line}


def healthy_cases_file(configured: str, raw_folder: Path | None) -> Path | None:
    """The file naming the healthy cases, or None when there is none (labels decide then). ``configured`` is
    ``anomaly.healthy_cases_file`` (relative paths are taken from ``raw_folder``, the raw dataset folder); ValueError
    when it is set but missing."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_absolute() and raw_folder is not None:
            path = raw_folder / path
        if not path.is_file():
            raise ValueError(f"anomaly.healthy_cases_file {path} does not exist; write it (one case identifier per "
                             "line) or set another path with nnugen_plan --set")
        return path
    default = raw_folder / HEALTHY_CASES_FILE if raw_folder is not None else None
    return default if default is not None and default.is_file() else None
