"""``nnugen_sample --size Z Y X`` (issue 19, part 1): any volume shape, each axis at least the training patch,
checked before anything is loaded or written; a shape that does not fit is one line saying what to give."""

from __future__ import annotations

import shutil

import pytest

from nnugen.inference.sample_request import SampleRequest, check_request, metadata, parse_size


@pytest.fixture
def ddpm_model(tmp_path, monkeypatch, fake_preprocessed):
    """A DDPM model folder of the fake dataset 901 with nnugen_plan's plans and a placeholder checkpoint."""
    from nnugen_planner.planner import PlanRequest, plan_dataset

    dataset = fake_preprocessed("isotropic", 901, "Fake")
    plans = plan_dataset(PlanRequest(dataset="901"))
    model = tmp_path / "results" / "Dataset901_Fake" / "NnugenDDPMTrainer__nnugenPlans__3d_fullres"
    (model / "fold_0").mkdir(parents=True)
    shutil.copy(plans, model / "plans.json")
    shutil.copy(dataset / "dataset.json", model / "dataset.json")
    (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"placeholder")
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    return model


def _request(tmp_path, size) -> SampleRequest:
    return SampleRequest(dataset="901", configuration="3d", num_cases=1, output_folder=tmp_path / "out",
                         device="cpu", size=size)


def test_a_shape_larger_than_the_patch_is_sampled_at_that_shape(ddpm_model, tmp_path):
    patch = check_request(_request(tmp_path, "patch")).patch_size
    shape = (patch[0] + 5, patch[1], 2 * patch[2] + 1)
    plan = check_request(_request(tmp_path, shape))
    assert plan.sampling_shape == shape and plan.geometry.shape == shape
    record = metadata(_request(tmp_path, shape), plan)
    assert record["size"] == list(shape)  # as sampling.json reads back, so --continue compares equal
    import json

    from nnugen.inference.sampling_record import read_sampling_record

    (tmp_path / "sampling.json").write_text(json.dumps(record))
    read = read_sampling_record(tmp_path / "sampling.json", "fix")
    assert read["size"] == list(shape) and read["noise"].startswith("torch.Generator") and read["partition"] is None


@pytest.mark.parametrize("change", ["smaller", "two_axes"])
def test_a_shape_that_does_not_fit_the_patch_is_refused(ddpm_model, tmp_path, change):
    patch = check_request(_request(tmp_path, "patch")).patch_size
    shape = (patch[0] - 1, *patch[1:]) if change == "smaller" else patch[:2]
    message = "at least the training patch" if change == "smaller" else "this configuration is 3d"
    with pytest.raises(ValueError, match=message):
        check_request(_request(tmp_path, shape))
    assert not (tmp_path / "out").exists()


def test_size_words_and_numbers():
    assert parse_size(["whole"]) == "whole" and parse_size(["patch"]) == "patch"
    assert parse_size(["64", "80", "96"]) == (64, 80, 96) and parse_size(["64", "80"]) == (64, 80)
    for bad in (["x"], ["64", "x", "3"], ["0", "4", "4"], ["4"], ["1", "2", "3", "4"]):
        with pytest.raises(ValueError, match="--size"):
            parse_size(bad)


def test_the_cli_refuses_a_size_below_the_patch_in_one_line(ddpm_model, tmp_path, capsys):
    from nnugen.entrypoints.sample import main

    assert main(["901", "3d", "1", str(tmp_path / "out"), "--size", "1", "2", "3", "-device", "cpu"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at least the training patch" in err[0]
    assert not (tmp_path / "out").exists()
