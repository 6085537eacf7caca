"""Finding a dataset's folders under nnUNet_raw / nnUNet_preprocessed / nnUNet_results and reading JSON files,
torch-free (the planner and the CLIs' checks use it), with one-line errors that say what to do. nnU-Net's own lookup
(``maybe_convert_to_dataset_name``) would pull in its heavier modules."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from nnugen.typed_section import MalformedFileError


class InputError(ValueError):
    """A problem with the user's input (a dataset, a folder, a file) that a one-line message explains."""


class MalformedJsonFile(InputError, MalformedFileError):
    """A JSON file nnugen reads (plans, dataset.json) that does not parse or holds no object: a malformed file, exit
    code 2 (cli_errors.py), and still an ``InputError`` for the callers that catch one."""


def _env_folder(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def check_path_name(name: str, what: str) -> str:
    """``name`` if it can be one file or folder name inside its parent folder; InputError when it would leave it
    (``..``, a path separator, an absolute path) or is empty. ``what`` says where it came from (``dataset name``)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or os.sep in name or "\0" in name \
            or Path(name).is_absolute():
        raise InputError(f"{what} {name!r} is not a plain file name (no '..', '/', '\\' or absolute path); "
                         "rename it to letters, digits, '-' and '_'")
    return name


def dataset_name(dataset: str | int) -> str:
    """``4`` / ``"004"`` / ``"Dataset004_Hippocampus"`` -> ``"Dataset004_Hippocampus"``, searched as nnU-Net does
    in nnUNet_preprocessed, nnUNet_raw and nnUNet_results. A name that would leave those folders is refused."""
    text = str(dataset)
    if text.startswith("Dataset"):
        return check_path_name(text, "dataset name")
    try:
        number = int(text)
    except ValueError:
        raise InputError(f"dataset '{text}' is neither an ID nor a name like Dataset004_Name") from None
    prefix = f"Dataset{number:03d}_"
    found = set()
    for variable in ("nnUNet_preprocessed", "nnUNet_raw", "nnUNet_results"):
        root = _env_folder(variable)
        if root is not None and root.is_dir():
            found.update(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith(prefix))
    if not found:
        searched = ", ".join(f"{v}={os.environ.get(v, '<unset>')}" for v in ("nnUNet_preprocessed", "nnUNet_raw"))
        raise InputError(f"no dataset with ID {number} ({prefix}*) found ({searched}); check the ID and the "
                            "nnUNet_* environment variables")
    if len(found) > 1:
        raise InputError(f"dataset ID {number} is ambiguous: {', '.join(sorted(found))}; pass the full name")
    return found.pop()


def preprocessed_folder(dataset: str | int) -> Path:
    root = _env_folder("nnUNet_preprocessed")
    if root is None:
        raise InputError("nnUNet_preprocessed is not set; export it as for nnUNetv2_plan_and_preprocess")
    folder = root / dataset_name(dataset)
    if not folder.is_dir():
        raise InputError(f"{folder} does not exist; run nnUNetv2_plan_and_preprocess -d {dataset} first")
    return folder


def raw_folder(dataset: str | int) -> Path | None:
    root = _env_folder("nnUNet_raw")
    folder = root / dataset_name(dataset) if root is not None else None
    return folder if folder is not None and folder.is_dir() else None


def load_json(path: Path, missing_hint: str = "") -> dict[str, Any]:
    if not path.is_file():
        raise InputError(f"{path} is missing" + (f"; {missing_hint}" if missing_hint else ""))
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except json.JSONDecodeError as error:
        raise MalformedJsonFile(f"{path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
                            "fix or regenerate that file") from None
    except UnicodeDecodeError:
        raise MalformedJsonFile(f"{path} is not UTF-8 text; fix or regenerate that file") from None
    if not isinstance(data, dict):
        raise MalformedJsonFile(f"{path} does not hold a JSON object; fix or regenerate that file")
    return data
