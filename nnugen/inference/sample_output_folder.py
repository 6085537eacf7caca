"""Which folders ``nnugen_sample`` may write into, so that it never writes over data it did not create. One run (no
``-num_parts``) needs a new or empty folder (``check_output_folder``); parts of one run start at the
same time into one folder, so each part accepts a folder that holds this same run (its ``sampling*.json`` records
agree on ``IDENTITY``). ``--as-dataset DatasetNNN_Name`` writes only into a dataset folder that carries this run's
``RUN_MARKER``, written before any case; an existing dataset without it is refused, whatever the flags.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from nnugen.folders.overlap import overlap
from nnugen.inference.sample_writing import output_layout
from nnugen.inference.sampling_record import read_sampling_record

if TYPE_CHECKING:
    from nnugen.inference.sample_request import SampleRequest

RUN_MARKER = ".nnugen_sampling_run.json"
"""Written into a ``--as-dataset`` folder before anything else: the identity (``run_identity``) of the run that
created it. nnugen_sample writes only into dataset folders that carry it."""
_RECORD = re.compile(r"sampling(_part\d+of\d+)?\.json")
_RUN_FILES = re.compile(r"previews|case_\d{4,}.*")
"""The other names nnugen_sample writes into its output folder (besides the ``--as-dataset`` folder and dot-named
temporaries)."""

IDENTITY = ("model_folder", "checkpoint", "trainer", "configuration", "mode", "sampler", "guidance_scale", "seed",
            "num_cases", "size", "file_shape", "num_parts")
"""The entries of sampling.json that all parts of one run share (``RECIPE`` less the part's own)."""


def identity_of_record(record: dict) -> dict:
    """The ``IDENTITY`` entries of a ``sampling*.json`` record, and its ``--as-dataset``."""
    request = record.get("request")
    return {**{key: record.get(key) for key in IDENTITY},
            "as_dataset": request.get("as_dataset") if isinstance(request, dict) else None}


def check_run_folder(request: SampleRequest, identity: dict) -> None:
    """A part (``-num_parts``) writes only into an empty folder or one that holds this same run: every
    ``sampling*.json`` there records ``identity``, and the rest are names the run writes. Parts start at the same
    time, so a folder that holds only empty folders and temporaries (another part just starting) counts as empty.
    ``--overwrite`` skips the check, as for one run."""
    folder = Path(request.output_folder)
    if request.overwrite or not folder.is_dir():
        return
    entries = sorted(folder.iterdir())
    records = [e for e in entries if e.is_file() and _RECORD.fullmatch(e.name)]
    for record in records:
        earlier = read_sampling_record(record, "choose a new folder, or pass --overwrite to replace files in it")
        if identity_of_record(earlier) != identity:
            raise ValueError(f"{record} records another sampling run; parts write only into an empty folder or one "
                             "of this same run: choose a new folder, or pass --overwrite to replace files in it")
    if records:
        foreign = [e for e in entries if not (e.name.startswith(".") or e.name == request.as_dataset
                                              or _RECORD.fullmatch(e.name) or _RUN_FILES.fullmatch(e.name))]
    else:
        foreign = [e for e in entries if _holds_files(e)]
    if foreign:
        raise ValueError(f"{folder} is not empty ({foreign[0].name}) and is not a folder of this sampling run; "
                         "choose a new folder, or pass --overwrite to replace files in it")


def check_dataset_folder(request: SampleRequest, identity: dict) -> None:
    """``--as-dataset``: an existing ``OUT/DatasetNNN_Name`` must be one this run created (its ``RUN_MARKER`` holds
    ``identity``), or, with ``--overwrite``, one any nnugen_sample run created; a dataset without the marker is
    never written into."""
    dataset, _, _ = output_layout(Path(request.output_folder), request.as_dataset)
    if dataset is None or not dataset.exists():
        return
    marker = dataset / RUN_MARKER
    if not dataset.is_dir() or (not marker.is_file() and _holds_files(dataset)):
        raise ValueError(f"{dataset} already exists and was not created by nnugen_sample (no {RUN_MARKER}); "
                         "it is left untouched: choose another --as-dataset name or output folder")
    if not marker.is_file() or request.overwrite:
        return
    try:
        earlier = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        earlier = None
    if earlier != identity:
        raise ValueError(f"{dataset} was created by another nnugen_sample run ({RUN_MARKER}); choose another "
                         "--as-dataset name, or pass --overwrite to replace its files")


def claim_dataset_folder(request: SampleRequest, identity: dict) -> None:
    """Mark ``OUT/DatasetNNN_Name`` as this run's before any case is written (every part writes the same marker)."""
    from nnugen.atomic_files import atomic_write_json

    dataset, _, _ = output_layout(Path(request.output_folder), request.as_dataset)
    if dataset is None:
        return
    marker = dataset / RUN_MARKER
    if marker.is_file() and not request.overwrite:
        return
    dataset.mkdir(parents=True, exist_ok=True)
    atomic_write_json(marker, identity)


def _holds_files(path: Path) -> bool:
    """Whether ``path`` is a file or a folder with a file anywhere below it (dot-named temporaries do not count)."""
    if not path.is_dir():
        return not path.name.startswith(".")
    return any(_holds_files(child) for child in path.iterdir())


def check_output_folder(folder: Path, overwrite: bool) -> None:
    """One run (no parts): a new or empty folder, unless --overwrite / --continue."""
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; give a folder for the samples")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise ValueError(f"{folder} is not empty; choose a new folder, pass --continue to finish an interrupted run "
                         "in it, or --overwrite to replace files in it")


def check_folders(request: SampleRequest, model_folder: Path) -> None:
    """The output folder must not be, or lie inside, a folder the run reads (``--labels-from``, the model), nor hold
    the label maps' folder; compared resolved, so symbolic links count as the folders they point to."""
    read = [("the model folder", Path(model_folder))]
    if request.labels_from is not None:
        read.append(("--labels-from", Path(request.labels_from)))
    for name, folder in read:
        kind = overlap(request.output_folder, folder)
        if kind in ("same", "inside") or (name == "--labels-from" and kind == "holds"):
            raise ValueError(f"the output folder {request.output_folder} overlaps {name} {folder.resolve()}; samples "
                             "would overwrite or mix with what is read: choose an output folder outside it")


def check_part_files(request: SampleRequest, file_ending: str) -> None:
    """Each part writes only its own files, and never over its own files from an earlier run unless --overwrite."""
    folder = Path(request.output_folder)
    _, images, _ = output_layout(folder, request.as_dataset)
    own = [folder / request.metadata_name, *(images / f"{case}_0000{file_ending}" for case in request.cases)]
    existing = [path for path in own if path.exists()]
    if existing and not (request.overwrite or request.continue_sampling):
        raise ValueError(f"{existing[0]} already exists (part {request.part_id} of {request.num_parts}); choose a new "
                         "folder or pass --overwrite to replace this part's files")
