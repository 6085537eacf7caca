"""``dataset.json`` of a raw dataset, written by nnU-Net's own ``generate_dataset_json`` (nnunetv2.dataset_conversion)
and moved into place atomically.

nnU-Net's function writes straight into the target folder, so a kill mid-write would leave a cut ``dataset.json``
that nnU-Net then reads. Here it writes into a scratch folder beside the target; the file is checked to parse as
JSON, fsynced and renamed over ``dataset.json`` (``atomic_files.atomic_path``). An existing file with the same bytes
is left as it is (a run split into parts writes the same file in every part).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from nnugen.atomic_files import atomic_path


def _parses(path: Path) -> None:
    json.loads(path.read_text(encoding="utf-8"))  # a ValueError for a file that is not whole


def write_dataset_json(folder: str | os.PathLike, channel_names: dict[str, str], labels: dict[str, Any],
                       num_training: int, file_ending: str, *, license: str, converted_by: str = "nnugen",
                       **fields: Any) -> Path:
    """``folder/dataset.json`` through ``generate_dataset_json(folder, channel_names, labels, num_training,
    file_ending, license=..., converted_by=..., **fields)``; ``fields`` are its keyword arguments (``dataset_name``,
    ``description``, ``reference``, ``overwrite_image_reader_writer``, ...) and any extra keys, which nnU-Net copies
    into the file. Returns the path."""
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    folder = Path(folder)
    target = folder / "dataset.json"
    with tempfile.TemporaryDirectory(dir=folder, prefix=".dataset_json.") as scratch:
        # copies: nnU-Net converts the keys and values of the dicts it is given in place
        generate_dataset_json(scratch, dict(channel_names), dict(labels), num_training, file_ending, license=license,
                              converted_by=converted_by, **fields)
        written = Path(scratch) / "dataset.json"
        if target.is_file() and target.read_bytes() == written.read_bytes():
            return target
        with atomic_path(target, check=_parses) as temporary:
            os.replace(written, temporary)
    return target
