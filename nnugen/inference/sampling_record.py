"""``sampling.json`` (``sampling_partIofP.json`` for a part): nnugen_sample's record of how a run made its files
(``sample_request.metadata``), read back by the next run into the same folder (``--continue``, other parts of the
run) through the typed path of the other side files (``typed_section.read_json_object``): a record with a wrong
type, NaN or Infinity, a missing or unknown key is a ``MalformedFileError`` ``FILE: field: what is wrong; fix``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnugen.typed_section import Section, read_json_object


@dataclass(frozen=True)
class RecordedSampler(Section):
    """The sampler a run used: ``sampling.json``'s ``sampler`` (``spacing``: not in records of older versions)."""

    name: str
    steps: int
    eta: float
    spacing: str | None = None


@dataclass(frozen=True)
class RecordedCase(Section):
    """One case of a run: its name (``case_0003``), its seed and the label map it was generated for, if any."""

    name: str
    seed: int
    label_from: str | None = None


RECORD_FIELDS = {
    "nnugen_version": str | None, "model_folder": str, "checkpoint": str, "trainer": str, "configuration": str,
    "mode": str, "sampler": RecordedSampler, "guidance_scale": float, "seed": int, "num_cases": int,
    "size": Any, "file_shape": tuple[int, ...], "spacing": tuple[float, ...] | None, "geometry_source": str | None,
    "intensity_units": str | None, "num_parts": int, "part_id": int, "cases": tuple[RecordedCase, ...],
    "request": dict[str, Any], "noise": str | None, "partition": tuple[int, ...] | None,
}
"""``sampling.json``'s fields and their JSON types (what ``metadata`` writes; ``X | None``: may be left out;
``size``: ``whole``, ``patch`` or a list of sizes, any finite JSON value here, compared by ``--continue``)."""


def read_sampling_record(path: Path, fix: str) -> dict[str, Any]:
    """The record in ``path``, checked against ``RECORD_FIELDS`` and returned as read; ``MalformedFileError``
    ``FILE: field: what is wrong; FIX`` when it is not a record nnugen_sample writes (``fix``: what the user does)."""
    return read_json_object(Path(path), RECORD_FIELDS, fix)
