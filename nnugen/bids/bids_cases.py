"""Which cases of a BIDS dataset to convert: one case per subject (and session), one image per contrast, its label
file in ``derivatives/PIPELINE/`` or an all-zero label for healthy cases, and the reason for every case skipped.

pybids indexes the dataset and tells which subject and session every file belongs to. Which file is a contrast or a
label is decided on the file name instead (``..._T2w.nii.gz``, ``..._seg-manual.nii.gz``), because pybids' entities
for derivative names are not stable: pybids 0.22 opened with ``derivatives=True, validate=False`` gives
``sub-01_T2w_seg-manual.nii.gz`` the entity ``segmentation=manual`` and no suffix at all, and
``sub-01_desc-brain_mask.nii.gz`` ``desc=brain, suffix=mask``."""

from __future__ import annotations

import json
import re
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NIFTI_EXTENSIONS = (".nii.gz", ".nii")
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
"""Dataset names and case identifiers: nnU-Net finds channels with ``re.escape(case) + "_\\d{4}"`` and names
preprocessed files after the case, so letters, digits, '-' and '_' only (pybids lets '+' into subject labels)."""


class BidsConversionError(ValueError):
    """A problem with the user's input that a one-line message explains."""


@dataclass(frozen=True)
class LabelSource:
    """``--labels PIPELINE:SUFFIX``: label files are in ``derivatives/PIPELINE/`` and end in ``_SUFFIX.nii[.gz]``."""

    pipeline: str
    suffix: str

    @classmethod
    def parse(cls, text: str) -> LabelSource:
        pipeline, colon, suffix = text.partition(":")
        leaves_folder = pipeline in (".", "..") or any(s in pipeline + suffix for s in ("/", "\\", "\0"))
        if not colon or not pipeline or not suffix or leaves_folder or suffix.endswith((".nii", ".nii.gz")):
            raise BidsConversionError(f"--labels {text!r}: expected PIPELINE:SUFFIX, e.g. labels:seg-manual for "
                                      "derivatives/labels/sub-01/anat/sub-01_T2w_seg-manual.nii.gz")
        return cls(pipeline, suffix)


@dataclass(frozen=True)
class BidsCase:
    """One subject (and session): its images in the order of the contrasts, and the label files that match."""

    subject: str
    session: str | None
    images: tuple[Path, ...]
    label_candidates: tuple[Path, ...]

    @property
    def bids_name(self) -> str:
        return bids_name(self.subject, self.session)


def bids_name(subject: str, session: str | None) -> str:
    """``sub-01_ses-01``, or ``sub-02`` without a session."""
    return f"sub-{subject}" + (f"_ses-{session}" if session else "")


@dataclass(frozen=True)
class SkippedCase:
    name: str
    reason: str


@dataclass(frozen=True)
class PlannedCase:
    """A case to write as ``identifier``; ``label`` None means healthy (an all-zero label)."""

    identifier: str
    case: BidsCase
    label: Path | None


@dataclass(frozen=True)
class CaseSearch:
    """Cases that have every contrast, the cases skipped with the reason, and every subject of the dataset."""

    cases: tuple[BidsCase, ...]
    skipped: tuple[SkippedCase, ...]
    subjects: tuple[str, ...]


def find_cases(root: Path, contrasts: tuple[str, ...], labels: LabelSource | None) -> CaseSearch:
    layout = open_layout(root)
    raw_files = layout.get(scope="raw", extension=list(NIFTI_EXTENSIONS))
    _check_contrasts(contrasts, raw_files)
    images = _group_by_case(raw_files)
    label_files = _group_by_case(_pipeline_layout(layout, root, labels.pipeline).get(
        extension=list(NIFTI_EXTENSIONS))) if labels is not None else {}
    cases, skipped = [], []
    for key in sorted(images, key=lambda k: (k[0], k[1] or "")):
        subject, session = key
        chosen, problem = _case_images(images[key], contrasts)
        if problem is not None:
            skipped.append(SkippedCase(bids_name(subject, session), problem))
            continue
        candidates = () if labels is None else _label_candidates(label_files.get(key, []), labels.suffix, contrasts)
        cases.append(BidsCase(subject, session, chosen, candidates))
    subjects = tuple(sorted({subject for subject, _ in images}))
    return CaseSearch(tuple(cases), tuple(skipped), subjects)


def open_layout(root: Path) -> Any:
    """``BIDSLayout(root, derivatives=True, validate=False)``, with pybids' warnings silenced (they would break the
    one-line error contract; what they say is checked here and reported in our own words)."""
    if not root.is_dir():
        raise BidsConversionError(f"BIDS root {root} is not a folder")
    if not (root / "dataset_description.json").is_file():
        raise BidsConversionError(f"{root} is not a BIDS root: it has no dataset_description.json")
    for description in (root / "dataset_description.json", *root.glob("derivatives/*/dataset_description.json")):
        _check_json(description)
    try:
        import bids
        from bids.exceptions import PyBIDSError
    except ImportError:
        raise BidsConversionError("pybids is not installed; install nnugen[bids]: pip install 'nnugen[bids]'") \
            from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return bids.BIDSLayout(str(root), derivatives=True, validate=False)
        except (PyBIDSError, ValueError, OSError) as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise BidsConversionError(f"pybids cannot index {root}: {first_line}") from None


def _check_json(path: Path) -> None:
    """pybids takes a broken root description with ``validate=False`` and fails on a derivative's without naming it."""
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BidsConversionError(f"{path} is not valid JSON ({error}); fix that file") from None


def _check_contrasts(contrasts: tuple[str, ...], raw_files: list[Any]) -> None:
    found = sorted({f.entities["suffix"] for f in raw_files if "suffix" in f.entities})
    unknown = [c for c in contrasts if c.split("_")[-1] not in found]
    if unknown:
        raise BidsConversionError(f"unknown contrast(s) {', '.join(unknown)}; the NIfTI images of this dataset have "
                                  f"the suffixes {', '.join(found) or '(none)'}")


def _pipeline_layout(layout: Any, root: Path, pipeline: str) -> Any:
    folder = root / "derivatives" / pipeline
    if not folder.is_dir():
        present = sorted(p.name for p in (root / "derivatives").iterdir() if p.is_dir()) \
            if (root / "derivatives").is_dir() else []
        raise BidsConversionError(f"no folder derivatives/{pipeline} in {root}; the pipelines there are "
                                  f"{', '.join(present) or '(none)'}")
    for derivative in (layout.derivatives or {}).values():
        if Path(derivative.root).resolve() == folder.resolve():
            return derivative
    raise BidsConversionError(f"pybids did not index {folder}: a BIDS-Derivatives folder needs a "
                              "dataset_description.json (Name, BIDSVersion, GeneratedBy); add one")


def _group_by_case(files: list[Any]) -> dict[tuple[str, str | None], list[Path]]:
    """(subject, session or None) -> NIfTI files, as pybids assigns them (from the folders and the file name)."""
    grouped: dict[tuple[str, str | None], list[Path]] = defaultdict(list)
    for file in files:
        if "subject" in file.entities:
            grouped[(str(file.entities["subject"]), _session(file.entities))].append(Path(file.path))
    return grouped


def _session(entities: dict[str, Any]) -> str | None:
    session = entities.get("session")
    return str(session) if session not in (None, "") else None


def _stem(path: Path) -> str:
    for extension in NIFTI_EXTENSIONS:
        if path.name.endswith(extension):
            return path.name[: -len(extension)]
    return path.name


def _entities_after_case(path: Path) -> str:
    """``sub-01_ses-01_run-1_T1w.nii.gz`` -> ``run-1_T1w``: the name less its subject and session."""
    pieces = _stem(path).split("_")
    while len(pieces) > 1 and pieces[0].startswith(("sub-", "ses-")):
        pieces.pop(0)
    return "_".join(pieces)


def _ending_in(files: list[Path], ending: str) -> list[Path]:
    return sorted(f for f in files if _stem(f).endswith("_" + ending))


def _case_images(files: list[Path], contrasts: tuple[str, ...]) -> tuple[tuple[Path, ...], str | None]:
    """One file per contrast, or the reason the case is skipped (a contrast missing or matched twice)."""
    chosen = []
    for contrast in contrasts:
        matches = _ending_in(files, contrast)
        if not matches:
            return (), f"no image ending in _{contrast}.nii.gz or _{contrast}.nii"
        if len(matches) > 1:
            example = max((_entities_after_case(m) for m in matches), key=len)
            return (), (f"{len(matches)} images end in _{contrast}.nii[.gz] ({', '.join(m.name for m in matches)}); "
                        f"name one with more entities, e.g. --contrasts {example}")
        chosen.append(matches[0])
    return tuple(chosen), None


def _label_candidates(files: list[Path], suffix: str, contrasts: tuple[str, ...]) -> tuple[Path, ...]:
    """Files ending in ``_SUFFIX``; when several, those built on the first contrast that has one
    (``sub-01_T2w_seg-manual`` beats ``sub-01_T1w_seg-manual`` for ``--contrasts T2w``)."""
    matches = _ending_in(files, suffix)
    if len(matches) > 1:
        for contrast in contrasts:
            preferred = _ending_in(matches, f"{contrast}_{suffix}")
            if preferred:
                return tuple(preferred)
    return tuple(matches)


def _ambiguous_label_reason(case: BidsCase, labels: LabelSource) -> str:
    example = max((_entities_after_case(p) for p in case.label_candidates), key=len)
    names = ", ".join(p.name for p in case.label_candidates)
    return (f"{len(case.label_candidates)} files in derivatives/{labels.pipeline} end in _{labels.suffix}.nii[.gz] "
            f"({names}); pass a longer SUFFIX, e.g. --labels {labels.pipeline}:{example}")


def read_healthy_list(path: Path | None, subjects: tuple[str, ...]) -> frozenset[str]:
    """Subject labels (``03``) of the file's ``sub-03`` (or ``03``) lines; blank lines and ``#`` comments ignored."""
    if path is None:
        return frozenset()
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise BidsConversionError(f"cannot read --healthy-list {path}: {getattr(error, 'strerror', None) or error}") \
            from None
    entries = (line.strip() for line in lines)
    wanted = {entry.removeprefix("sub-") for entry in entries if entry and not entry.startswith("#")}
    unknown = sorted(wanted - set(subjects))
    if unknown:
        raise BidsConversionError(f"--healthy-list {path} names subjects not in the dataset: "
                                  f"{', '.join('sub-' + s for s in unknown)}")
    return frozenset(wanted)


def select_cases(search: CaseSearch, name: str, task: str, labels: LabelSource | None,
                 healthy_subjects: frozenset[str]) -> tuple[tuple[PlannedCase, ...], tuple[SkippedCase, ...]]:
    """The cases to write and every case skipped (``search.skipped`` first). Healthy-list subjects get an all-zero
    label; a case without a label file is skipped for ``task="seg"`` and healthy for ``task="anomaly"``."""
    plan, skipped = [], list(search.skipped)
    for case in search.cases:
        identifier = f"{name}_{case.bids_name}"
        if not IDENTIFIER.fullmatch(identifier):
            skipped.append(SkippedCase(case.bids_name, "its subject or session label holds characters nnU-Net case "
                                                       "identifiers cannot (letters, digits, '-' and '_' only)"))
        elif case.subject in healthy_subjects:
            plan.append(PlannedCase(identifier, case, None))
        elif len(case.label_candidates) == 1:
            plan.append(PlannedCase(identifier, case, case.label_candidates[0]))
        elif len(case.label_candidates) > 1:
            skipped.append(SkippedCase(case.bids_name, _ambiguous_label_reason(case, labels)))
        elif task == "anomaly":
            plan.append(PlannedCase(identifier, case, None))
        else:
            skipped.append(SkippedCase(case.bids_name, f"no file ending in _{labels.suffix}.nii[.gz] in "
                                                       f"derivatives/{labels.pipeline} (use --task anomaly to keep it "
                                                       "as a healthy case)"))
    return tuple(plan), tuple(skipped)
