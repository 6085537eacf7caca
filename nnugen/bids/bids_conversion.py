"""BIDS dataset -> nnU-Net raw dataset ``$nnUNet_raw/DatasetXXX_NAME/`` (imagesTr/, labelsTr/, dataset.json).

A case is one subject (and session); channel i is contrast i; the label is the case's derivative file (see
``bids_cases``). The dataset is built in a hidden folder next to the target and moved into place at the end, so a
failed conversion leaves nothing behind. ``dataset.json`` is written by nnU-Net's own ``generate_dataset_json`` into
that folder; it names the BIDS dataset (its ``dataset_description.json`` ``Name`` and folder name), never its path on
this machine, so the raw dataset and the model folders nnU-Net copies it into can travel."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnugen.atomic_files import atomic_write_text, atomic_write_with
from nnugen.bids.bids_cases import (
    IDENTIFIER,
    BidsCase,
    BidsConversionError,
    LabelSource,
    SkippedCase,
    find_cases,
    read_healthy_list,
    select_cases,
)
from nnugen.folders.dataset_json import write_dataset_json

TASKS = ("seg", "anomaly")
HEALTHY_CASES_FILE = "healthy_cases.txt"
FILE_ENDING = ".nii.gz"
GEOMETRY_RTOL, GEOMETRY_ATOL = 1e-5, 1e-4
"""Spacing, origin (mm) and direction cosines closer than this are one grid (float32 NIfTI headers differ by less)."""


@dataclass(frozen=True)
class BidsRequest:
    """What ``nnugen_convert_bids`` converts. ``labels`` is ``PIPELINE:SUFFIX``; ``healthy_list`` a file of subject
    ids (``sub-03``), one a line, whose cases get all-zero labels; ``label_names`` name label values 1, 2, ...;
    ``raw_root`` defaults to ``$nnUNet_raw``."""

    bids_root: Path
    dataset_id: int
    name: str
    contrasts: tuple[str, ...]
    labels: str | None = None
    healthy_list: Path | None = None
    task: str = "seg"
    label_names: tuple[str, ...] = ()
    raw_root: Path | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.dataset_id <= 999:
            raise BidsConversionError(f"DATASET_ID {self.dataset_id}: nnU-Net dataset IDs are 1 to 999")
        if not IDENTIFIER.fullmatch(self.name):
            raise BidsConversionError(f"NAME {self.name!r}: use letters, digits, '-' and '_' only, e.g. SpineGeneric")
        if not self.contrasts or len(set(self.contrasts)) != len(self.contrasts):
            raise BidsConversionError("--contrasts needs one or more different contrasts, e.g. --contrasts T1w T2w")
        if self.task not in TASKS:
            raise BidsConversionError(f"--task {self.task!r}: use one of {', '.join(TASKS)}")
        if self.task == "seg" and self.labels is None:
            raise BidsConversionError("--task seg needs --labels PIPELINE:SUFFIX, e.g. --labels labels:seg-manual "
                                      "(or --task anomaly for healthy cases only)")
        if "background" in self.label_names or len(set(self.label_names)) != len(self.label_names):
            raise BidsConversionError("--label-names must be different names for labels 1, 2, ... (not 'background')")

    @property
    def folder_name(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"


@dataclass(frozen=True)
class ConversionReport:
    """``cases``: case identifiers written, ``healthy_cases`` among them with all-zero labels; ``skipped``: BIDS
    subject/sessions left out, with the reason; ``labels``: dataset.json's labels."""

    dataset_folder: Path
    cases: tuple[str, ...]
    healthy_cases: tuple[str, ...]
    skipped: tuple[SkippedCase, ...]
    labels: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Geometry:
    """A SimpleITK image's grid, read from the header only."""

    size: tuple[int, ...]
    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def read(cls, path: Path) -> Geometry:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            raise BidsConversionError(f"cannot read {path}; is it a valid NIfTI file?") from None
        dimension, components = reader.GetDimension(), reader.GetNumberOfComponents()
        if dimension not in (2, 3) or components != 1:
            raise BidsConversionError(f"{path} is a {dimension}-D image with {components} component(s); nnU-Net "
                                      "takes one 2-D or 3-D volume per channel")
        return cls(tuple(reader.GetSize()), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())

    def differences(self, other: Geometry) -> list[str]:
        """What differs beyond tolerance, e.g. ``["size (16, 16, 12) vs (16, 16, 10)"]``; empty if one grid."""
        if self.size != other.size:
            return [f"size {self.size} vs {other.size}"]
        return [f"{name} {np.round(mine, 4).tolist()} vs {np.round(theirs, 4).tolist()}"
                for name, mine, theirs in (("spacing", self.spacing, other.spacing), ("origin", self.origin,
                                           other.origin), ("direction", self.direction, other.direction))
                if not np.allclose(mine, theirs, rtol=GEOMETRY_RTOL, atol=GEOMETRY_ATOL)]

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def convert_bids(request: BidsRequest) -> ConversionReport:
    raw_root = _raw_root(request)
    target = raw_root / request.folder_name
    _check_id_is_free(request, raw_root)
    labels = LabelSource.parse(request.labels) if request.labels is not None else None
    search = find_cases(Path(request.bids_root), request.contrasts, labels)
    healthy_subjects = read_healthy_list(request.healthy_list, search.subjects)
    plan, skipped = select_cases(search, request.name, request.task, labels, healthy_subjects)
    if not plan:
        first = f" (first: {skipped[0].name}: {skipped[0].reason})" if skipped else ""
        raise BidsConversionError(f"no case to convert in {request.bids_root}: {len(skipped)} subject/session(s) "
                                  f"skipped{first}")
    temporary = raw_root / f".{target.name}.tmp-{secrets.token_hex(4)}"
    os.mkdir(temporary)
    try:
        (temporary / "imagesTr").mkdir()
        (temporary / "labelsTr").mkdir()
        found_values: set[int] = set()
        for planned in plan:
            found_values |= _write_case(temporary, planned.identifier, planned.case, planned.label)
        label_map = _label_map(found_values, request.label_names, labels)
        healthy = tuple(planned.identifier for planned in plan if planned.label is None)
        _write_dataset_json(temporary, request, label_map, len(plan))
        if healthy or request.task == "anomaly":
            atomic_write_text(temporary / HEALTHY_CASES_FILE, "".join(f"{c}\n" for c in healthy))
        os.replace(temporary, target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return ConversionReport(target, tuple(planned.identifier for planned in plan), healthy, skipped, label_map)


def _raw_root(request: BidsRequest) -> Path:
    if request.raw_root is not None:
        root = Path(request.raw_root)
    elif os.environ.get("nnUNet_raw"):
        root = Path(os.environ["nnUNet_raw"])
    else:
        raise BidsConversionError("nnUNet_raw is not set; export it as for nnUNetv2_plan_and_preprocess")
    if not root.is_dir():
        raise BidsConversionError(f"nnUNet_raw folder {root} does not exist; create it or fix nnUNet_raw")
    return root


def _check_id_is_free(request: BidsRequest, raw_root: Path) -> None:
    """No ``DatasetXXX_*`` in nnUNet_raw; none with another name in nnUNet_preprocessed / nnUNet_results either (nnU-Net
    would call the ID ambiguous)."""
    prefix = f"Dataset{request.dataset_id:03d}_"
    taken = [p for p in raw_root.iterdir() if p.name.startswith(prefix)]
    for variable in ("nnUNet_preprocessed", "nnUNet_results"):
        folder = Path(os.environ[variable]) if os.environ.get(variable) else None
        if folder is not None and folder.is_dir():
            taken += [p for p in folder.iterdir() if p.name.startswith(prefix) and p.name != request.folder_name]
    if taken:
        raise BidsConversionError(f"dataset ID {request.dataset_id} is taken by {taken[0]}; pick another DATASET_ID "
                                  "or remove that folder")


def _write_case(folder: Path, identifier: str, case: BidsCase, label: Path | None) -> set[int]:
    """Write the channels and the label of one case; returns the label values found."""
    geometries = [Geometry.read(path) for path in case.images]
    reference = geometries[0]
    for path, geometry in zip(case.images[1:], geometries[1:]):
        differences = reference.differences(geometry)
        if differences:
            raise BidsConversionError(f"case {identifier}: channels {case.images[0].name} and {path.name} are on "
                                      f"different grids ({'; '.join(differences)}); register or resample them first")
    for channel, (path, geometry) in enumerate(zip(case.images, geometries)):
        target = folder / "imagesTr" / f"{identifier}_{channel:04d}{FILE_ENDING}"
        if path.name.endswith(FILE_ENDING) and geometry == reference:
            atomic_write_with(target, lambda temporary, source=path: shutil.copyfile(source, temporary))
        else:  # .nii, or within tolerance of channel 0: written on channel 0's grid so nnU-Net sees one grid
            image = reference.apply_to(sitk.ReadImage(str(path)))
            _write_image(image, target)
    values = _label_values(identifier, label, reference) if label is not None else \
        np.zeros(reference.size[::-1], dtype=np.uint8)
    dtype = np.uint8 if values.max(initial=0) <= np.iinfo(np.uint8).max else np.uint16
    _write_image(reference.apply_to(sitk.GetImageFromArray(values.astype(dtype))),
                 folder / "labelsTr" / f"{identifier}{FILE_ENDING}")
    return {int(v) for v in np.unique(values)}


def _label_values(identifier: str, path: Path, reference: Geometry) -> np.ndarray:
    """The label as integers: integer-valued maps as they are, other float masks binarised at 0.5."""
    differences = reference.differences(Geometry.read(path))
    if differences:
        raise BidsConversionError(f"case {identifier}: label {path.name} is not on the grid of its images "
                                  f"({'; '.join(differences)}); resample the label onto the images first")
    values = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    if not np.all(np.isfinite(values)):
        raise BidsConversionError(f"case {identifier}: label {path} holds NaN or Inf voxels; fix the label file")
    if np.issubdtype(values.dtype, np.floating) and not np.array_equal(values, np.round(values)):
        values = values > 0.5
    values = values.astype(np.int64)
    if values.min(initial=0) < 0 or values.max(initial=0) > np.iinfo(np.uint16).max:
        raise BidsConversionError(f"case {identifier}: label {path} holds values outside 0..65535; nnU-Net labels "
                                  "are 0 (background), 1, 2, ...")
    return values


def _write_image(image: sitk.Image, target: Path) -> None:
    atomic_write_with(target, lambda temporary: sitk.WriteImage(image, str(temporary), True), suffix=FILE_ENDING)


def _label_map(found: set[int], names: tuple[str, ...], labels: LabelSource | None) -> dict[str, int]:
    """``{"background": 0, NAME: 1, ...}`` for every value up to the largest found (nnU-Net wants 0..K without gaps);
    one label at least, so a dataset of healthy cases still trains a foreground class."""
    highest = max(max(found, default=0), len(names), 1)
    if len(names) not in (0, highest):
        raise BidsConversionError(f"--label-names gives {len(names)} name(s) but the labels hold values up to "
                                  f"{highest}; give one name per value 1..{highest}")
    base = labels.suffix if labels is not None else "lesion"
    default = [base] if highest == 1 else [f"{base}_{value}" for value in range(1, highest + 1)]
    return {"background": 0, **{name: value for value, name in enumerate(names or default, start=1)}}


def _write_dataset_json(folder: Path, request: BidsRequest, label_map: dict[str, int], num_training: int) -> None:
    """``folder/dataset.json`` through nnU-Net's ``generate_dataset_json`` (folders/dataset_json.py); ``folder`` is the
    conversion's temporary folder, moved into place whole."""
    bids = _bids_description(Path(request.bids_root))
    options = f"--contrasts {' '.join(request.contrasts)}" + (f" --labels {request.labels}" if request.labels else "") \
        + f" --task {request.task}"
    write_dataset_json(folder, {str(i): contrast for i, contrast in enumerate(request.contrasts)}, label_map,
                       num_training, FILE_ENDING, license=bids["license"], converted_by="nnugen_convert_bids",
                       dataset_name=request.name,
                       description=f"converted from the BIDS dataset {bids['name']!r} (folder "
                                   f"{Path(request.bids_root).resolve().name}) by nnugen_convert_bids ({options})")


def _bids_description(root: Path) -> dict[str, str]:
    """The BIDS dataset's ``Name`` and ``License`` from its ``dataset_description.json`` (checked readable by
    ``bids_cases.open_layout``), with what to say when they are not given."""
    description = json.loads((root / "dataset_description.json").read_text(encoding="utf-8"))
    description = description if isinstance(description, dict) else {}
    return {"name": str(description.get("Name") or root.resolve().name),
            "license": str(description.get("License") or "not given in the BIDS dataset_description.json")}
