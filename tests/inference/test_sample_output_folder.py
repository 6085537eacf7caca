"""nnugen_sample writes only into folders of its own run (issue 15, fault 3): a part (``-num_parts``) into an empty
folder or one that holds this same run, ``--as-dataset`` only into a dataset folder that this run created (its
marker file), never into an existing dataset. The checks take the run's identity (``run_identity``), so they run
here without a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnugen.inference.sample_output_folder import (
    RUN_MARKER,
    check_dataset_folder,
    check_run_folder,
    claim_dataset_folder,
)
from nnugen.inference.sample_request import SampleRequest

IDENTITY = {"model_folder": "/results/Dataset901_Tiny/NnugenDDPMTrainer__nnugenPlans__3d_fullres", "checkpoint": "c",
            "trainer": "NnugenDDPMTrainer", "configuration": "3d_fullres", "mode": "joint",
            "sampler": {"name": "ddim", "steps": 2, "eta": 0.0}, "guidance_scale": 1.0, "seed": 0, "num_cases": 3,
            "size": "patch", "file_shape": [8, 8, 8], "num_parts": 2, "as_dataset": None}


def part(folder: Path, part_id: int = 0, **changes) -> SampleRequest:
    return SampleRequest(dataset="901", configuration="3d", num_cases=3, output_folder=folder, num_parts=2,
                         part_id=part_id, **changes)


def record(folder: Path, part_id: int, identity: dict = IDENTITY) -> None:
    """A part's ``sampling_partKof2.json`` as ``sample_request.metadata`` writes it (the entries that matter here)."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = {k: v for k, v in identity.items() if k != "as_dataset"}
    (folder / f"sampling_part{part_id}of2.json").write_text(json.dumps(
        {**entries, "part_id": part_id, "cases": [], "request": {"as_dataset": identity["as_dataset"]}}))


def test_a_part_refuses_a_non_empty_foreign_folder(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.nii.gz").write_bytes(b"keep")
    with pytest.raises(ValueError, match=r"out is not empty \(mine.nii.gz\) and is not a folder of this sampling "
                                         r"run; choose a new folder, or pass --overwrite"):
        check_run_folder(part(tmp_path / "out"), IDENTITY)
    check_run_folder(part(tmp_path / "out", overwrite=True), IDENTITY)  # as for one run: --overwrite allows it
    assert (tmp_path / "out" / "mine.nii.gz").read_bytes() == b"keep"


def test_a_part_refuses_another_runs_folder(tmp_path):
    record(tmp_path / "out", 1, {**IDENTITY, "seed": 1})
    with pytest.raises(ValueError, match="sampling_part1of2.json records another sampling run"):
        check_run_folder(part(tmp_path / "out"), IDENTITY)


def test_a_part_refuses_foreign_files_beside_this_runs_records(tmp_path):
    record(tmp_path / "out", 1)
    (tmp_path / "out" / "notes.txt").write_text("not ours")
    with pytest.raises(ValueError, match=r"not empty \(notes.txt\)"):
        check_run_folder(part(tmp_path / "out"), IDENTITY)


def test_parts_of_one_run_share_the_folder(tmp_path):
    """Parts start together: part 0 finds nothing, or the empty folders and temporaries another part just made, or
    that part's record and files."""
    out = tmp_path / "out"
    check_run_folder(part(out), IDENTITY)  # nothing there yet
    (out / "previews").mkdir(parents=True)
    (out / ".sampling_part1of2.json.1a2b.tmp").write_bytes(b"")
    check_run_folder(part(out), IDENTITY)  # the other part is starting
    record(out, 1)
    (out / "case_0001_0000.nii.gz").write_bytes(b"x")
    (out / "previews" / "case_0001.png").write_bytes(b"x")
    check_run_folder(part(out), IDENTITY)  # the other part is writing its cases


def test_as_dataset_refuses_an_existing_foreign_dataset_and_leaves_it_alone(tmp_path):
    dataset = tmp_path / "raw" / "Dataset950_Real"
    (dataset / "imagesTr").mkdir(parents=True)
    (dataset / "dataset.json").write_text('{"name": "Real"}')
    identity = {**IDENTITY, "as_dataset": "Dataset950_Real"}
    for overwrite in (False, True):
        with pytest.raises(ValueError, match="Dataset950_Real already exists and was not created by nnugen_sample"):
            check_dataset_folder(part(tmp_path / "raw", as_dataset="Dataset950_Real", overwrite=overwrite), identity)
    assert (dataset / "dataset.json").read_text() == '{"name": "Real"}' and not (dataset / RUN_MARKER).exists()


def test_as_dataset_writes_into_the_dataset_this_run_created(tmp_path):
    identity = {**IDENTITY, "as_dataset": "Dataset950_Synth"}
    request = part(tmp_path / "out", as_dataset="Dataset950_Synth")
    check_dataset_folder(request, identity)  # not there yet
    claim_dataset_folder(request, identity)
    marker = tmp_path / "out" / "Dataset950_Synth" / RUN_MARKER
    assert json.loads(marker.read_text()) == identity
    check_dataset_folder(part(tmp_path / "out", 1, as_dataset="Dataset950_Synth"), identity)  # the other part
    other = {**identity, "seed": 5}
    with pytest.raises(ValueError, match="was created by another nnugen_sample run"):
        check_dataset_folder(request, other)
    check_dataset_folder(part(tmp_path / "out", as_dataset="Dataset950_Synth", overwrite=True), other)


@pytest.mark.parametrize("name", ["../Dataset950_X", "Dataset950_../x", "/tmp/Dataset950_X", "Dataset950_a/b"])
def test_as_dataset_names_that_leave_the_output_folder_are_refused(tmp_path, name):
    from nnugen.inference.sample_request import _check_values

    with pytest.raises(ValueError, match="--as-dataset .*: name it like nnU-Net's datasets"):
        _check_values(SampleRequest(dataset="901", configuration="3d", num_cases=1, output_folder=tmp_path,
                                    as_dataset=name))


def test_label_maps_are_checked_like_the_inputs_of_nnugen_predict(tmp_path):
    import numpy as np
    import SimpleITK as sitk

    from nnugen.inference.sample_request import _check_label_images

    paths = []
    for name, value in (("a.nii.gz", 1.0), ("b.nii.gz", np.nan), ("c.nii.gz", 0.0)):
        paths.append(tmp_path / name)
        sitk.WriteImage(sitk.GetImageFromArray(np.full((4, 5, 6), value, np.float32)), str(paths[-1]))
    paths[2].write_bytes(paths[2].read_bytes()[:60])
    _check_label_images((paths[0],))
    with pytest.raises(ValueError, match=r"^2 label map\(s\) in --labels-from cannot be used, nothing was written: "
                                         r".*b.nii.gz: 120 NaN .*c.nii.gz: truncated gzip stream"):
        _check_label_images(tuple(paths))


@pytest.mark.parametrize("output", ["labels", "labels/out", ".", "model/samples"])
def test_samples_never_go_into_the_label_maps_or_the_model(tmp_path, output):
    from nnugen.inference.sample_output_folder import check_folders

    (tmp_path / "labels").mkdir()
    (tmp_path / "model").mkdir()
    request = SampleRequest(dataset="901", configuration="3d", num_cases=1, output_folder=tmp_path / output,
                            labels_from=tmp_path / "labels", overwrite=True)
    with pytest.raises(ValueError, match="overlaps (--labels-from|the model folder) .*choose an output folder outside"):
        check_folders(request, tmp_path / "model")
    check_folders(SampleRequest(dataset="901", configuration="3d", num_cases=1, output_folder=tmp_path / "out",
                                 labels_from=tmp_path / "labels"), tmp_path / "model")
