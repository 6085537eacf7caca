"""Files that travel with a model folder name no folder of the machine that trained it. nnU-Net's ``debug.json`` and
``validation/summary.json`` (which ``nnUNetv2_export_model_to_zip`` copies) hold the trainer's output and preprocessed
folders, and each validation case's files, as absolute paths; here
each nnU-Net root folder in such a text becomes the variable that names it (``$nnUNet_results/Dataset001_X/...``), as
a path is written in nnU-Net's documentation, so the file still says which folder it was and where it lies relative
to the roots of whoever reads it. Torch-free."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from nnugen.atomic_files import atomic_write_text

ROOT_VARIABLES = ("nnUNet_results", "nnUNet_preprocessed", "nnUNet_raw")


def portable_text(text: str, environ: Mapping[str, str] = os.environ) -> str:
    """``text`` with every nnU-Net root folder of ``environ`` (as set and resolved, the longest first, whole path
    components only) replaced by ``$nnUNet_results``, ``$nnUNet_preprocessed`` or ``$nnUNet_raw``."""
    roots: dict[str, str] = {}
    for variable in ROOT_VARIABLES:
        value = environ.get(variable)
        if value:
            for form in (value.rstrip("/\\") or value, str(Path(value).resolve())):
                roots.setdefault(form, f"${variable}")
    for form in sorted(roots, key=len, reverse=True):
        text = re.sub(re.escape(form) + r"(?![\w.-])", lambda _, name=roots[form]: name, text)
    return text


def make_portable(path: Path, environ: Mapping[str, str] = os.environ) -> None:
    """Rewrite the text file ``path`` (atomically) with ``portable_text``, if that changes it."""
    text = Path(path).read_text(encoding="utf-8")
    portable = portable_text(text, environ)
    if portable != text:
        atomic_write_text(path, portable)


def make_validation_portable(fold_folder: str | os.PathLike) -> None:
    """``make_portable`` on nnU-Net's ``fold_folder/validation/summary.json`` (its cases' ``prediction_file`` and
    ``reference_file``), when there is one."""
    summary = Path(fold_folder) / "validation" / "summary.json"
    if summary.is_file():
        make_portable(summary)
