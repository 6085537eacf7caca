"""The cases of an input folder in nnU-Net's raw layout (``CASE_XXXX<file_ending>``, one file per channel), checked
against the model before anything is loaded or written: every case has exactly the model's channels. nnU-Net's own
listing takes any ``*<file_ending>`` file and fails deep inside preprocessing on a missing or extra channel; here the
message names the case. Torch-free (the CLI reports bad input before importing torch)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from nnugen.folders.dataset_folders import check_path_name

_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


@dataclass(frozen=True)
class InputCase:
    identifier: str
    files: tuple[Path, ...]
    """One image per channel, in channel order (``_0000``, ``_0001`` ...)."""


def find_cases(folder: Path, file_ending: str, channel_names: dict[str, str]) -> list[InputCase]:
    """Every case in ``folder``, sorted by name (nnU-Net's order, which ``-num_parts`` / ``-part_id`` split).
    ``channel_names`` is the model's ``dataset.json`` entry ({"0": "T1", ...}). ValueError naming the problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"input folder {folder} does not exist; pass -i with a folder of CASE_0000{file_ending} "
                         "images")
    channels: dict[str, set[int]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.name.endswith(file_ending) or not path.is_file():
            continue
        stem = path.name[: -len(file_ending)]
        match = _CHANNEL_SUFFIX.match(stem)
        if match is None:
            raise ValueError(f"{path.name} in {folder} has no channel number; nnU-Net names images "
                             f"CASE_XXXX{file_ending} (e.g. {stem}_0000{file_ending})")
        channels.setdefault(check_path_name(match["case"], f"case identifier of {path.name}"), set()).add(
            int(match["channel"]))
    if not channels:
        raise ValueError(f"no images ending in {file_ending} in {folder}; the model reads CASE_0000{file_ending} "
                         "files")
    expected = set(range(len(channel_names)))
    described = ", ".join(f"_{int(k):04d} {v}" for k, v in sorted(channel_names.items(), key=lambda kv: int(kv[0])))
    for case, found in sorted(channels.items()):
        if found != expected:
            present = ", ".join(f"_{c:04d}" for c in sorted(found))
            raise ValueError(f"case {case} in {folder} has {len(found)} channel file(s) ({present}) but the model "
                             f"expects {len(expected)} ({described})")
    cases = [InputCase(case, tuple(folder / f"{case}_{c:04d}{file_ending}" for c in sorted(expected)))
             for case in sorted(channels)]
    for case in cases:
        _check_single_channel_images(case)
    return cases


def _check_single_channel_images(case: InputCase) -> None:
    """Each file must hold one channel: a vector image or a 4D stack would hand nnU-Net's reader extra channels."""
    import SimpleITK as sitk

    for path in case.files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            continue  # not a format SimpleITK reads (nnU-Net may use another reader): leave it to that reader
        components = reader.GetNumberOfComponents()
        stacked = reader.GetSize()[3] if reader.GetDimension() == 4 else 1
        if components * stacked != 1:
            raise ValueError(f"case {case.identifier}: {path.name} holds {components * stacked} channels; the model "
                             "expects one image per channel file (CASE_0000, CASE_0001 ...)")
