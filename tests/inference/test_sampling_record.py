"""``sampling.json`` is read back through the typed path of the other side files (issue 15): what ``metadata`` writes
loads, also for a part, with label maps and from a record of an older version; a wrong type, NaN, a missing or
unknown key is a ``MalformedFileError`` ``FILE: field: what; fix``, also where nnugen_sample reads it (a part's
folder check, ``--continue``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from nnugen.config import SamplerSettings
from nnugen.inference.sample_output_folder import check_run_folder, identity_of_record
from nnugen.inference.sample_request import SampleRequest, metadata
from nnugen.inference.sampling_record import read_sampling_record
from nnugen.typed_section import MalformedFileError


def _plan(label_files: tuple = ()) -> SimpleNamespace:
    """What ``metadata`` reads of a SamplePlan."""
    files = SimpleNamespace(model_folder=Path("/results/M"), checkpoint=Path("/results/M/fold_0/c.pth"),
                            trainer_name="NnugenDDPMTrainer", configuration="2d")
    geometry = SimpleNamespace(file_shape=(8, 9), properties=lambda: {"sitk_stuff": {"spacing": (1.0, 0.5)}},
                               reference=SimpleNamespace(source="plans"))
    return SimpleNamespace(files=files, settings=SimpleNamespace(generation=SimpleNamespace(mode="joint")),
                           sampler=SamplerSettings(steps=3), guidance_scale=1.5, geometry=geometry,
                           label_files=label_files)


def _request(folder: Path, **changes) -> SampleRequest:
    return SampleRequest(dataset="901", configuration="2d", num_cases=3, output_folder=folder, **changes)


def _written(path: Path, request: SampleRequest, plan) -> dict:
    record = metadata(request, plan)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return record


@pytest.mark.parametrize("changes, labels", [({}, ()), ({"num_parts": 2, "part_id": 1}, ()),
                                             ({"as_dataset": "Dataset950_S"}, ("/l/a.nii.gz", "/l/b.nii.gz",
                                                                               "/l/c.nii.gz"))])
def test_what_metadata_writes_reads_back_unchanged(tmp_path, changes, labels):
    request = _request(tmp_path / "out", **changes)
    written = _written(tmp_path / "out" / request.metadata_name, request, _plan(labels))
    assert read_sampling_record(tmp_path / "out" / request.metadata_name, "fix") == written


def test_a_record_of_an_older_version_reads(tmp_path):
    """Records written before the sampler's spacing, the geometry source and the version were recorded."""
    record = _written(tmp_path / "sampling.json", _request(tmp_path), _plan())
    for key in ("nnugen_version", "spacing", "geometry_source", "intensity_units"):
        record.pop(key)
    record["sampler"].pop("spacing")
    (tmp_path / "sampling.json").write_text(json.dumps(record))
    assert read_sampling_record(tmp_path / "sampling.json", "fix") == record


@pytest.mark.parametrize("change, field", [
    (lambda r: r.update(seed="zero"), "seed: expected int, got 'zero'"),
    (lambda r: r.update(guidance_scale=math.nan), "guidance_scale: nan is not a finite number"),
    (lambda r: r["sampler"].update(steps=2.5), "sampler.steps: expected int, got 2.5"),
    (lambda r: r["sampler"].update(eta=-math.inf), "sampler.eta: -inf is not a finite number"),
    (lambda r: r["cases"][1].update(seed=None), "cases[1].seed: expected int, got None"),
    (lambda r: r["cases"][0].pop("name"), "cases[0]: "),
    (lambda r: r.update(cases=7), "cases: expected a list, got 7"),
    (lambda r: r.update(request=[1]), "request: expected a mapping, got [1]"),
    (lambda r: r["request"].update(eta=math.inf), "request.eta: inf is not a finite number"),
    (lambda r: r.pop("trainer"), "trainer: missing"),
    (lambda r: r.update(extra=1), "unknown key(s) extra"),
])
def test_a_broken_record_names_the_file_and_field(tmp_path, change, field):
    record = _written(tmp_path / "sampling.json", _request(tmp_path), _plan())
    change(record)
    (tmp_path / "sampling.json").write_text(json.dumps(record))
    with pytest.raises(MalformedFileError) as error:
        read_sampling_record(tmp_path / "sampling.json", "choose a new folder")
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'sampling.json'}: "), message
    assert field in message and message.endswith("; choose a new folder"), message


def test_a_part_names_a_broken_record_of_its_folder(tmp_path):
    request = _request(tmp_path / "out", num_parts=2, part_id=1)
    record = _written(tmp_path / "out" / request.metadata_name, request, _plan())
    identity = identity_of_record(record)
    check_run_folder(_request(tmp_path / "out", num_parts=2, part_id=0), identity)  # the same run: accepted
    record["num_cases"] = "3"
    (tmp_path / "out" / request.metadata_name).write_text(json.dumps(record))
    with pytest.raises(MalformedFileError, match=r"sampling_part1of2\.json: num_cases: expected int, got '3'; "
                                                 r"choose a new folder, or pass --overwrite"):
        check_run_folder(_request(tmp_path / "out", num_parts=2, part_id=0), identity)
