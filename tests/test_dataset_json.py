"""dataset.json through nnU-Net's generate_dataset_json, moved into place atomically (nnugen/folders/dataset_json.py),
and the demo writers that use it."""

import json
import os

import numpy as np
import pytest
from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name

import nnugen.folders.dataset_json as dataset_json_module
from nnugen.demo.lesion_dataset import write_lesion_dataset
from nnugen.demo.phantom import PhantomSpec, write_phantom_dataset
from nnugen.folders.dataset_json import write_dataset_json

ARGUMENTS = dict(channel_names={"0": "T1", "1": "T2"}, labels={"background": 0, "organ": 1}, num_training=3,
                 file_ending=".nii.gz")


def test_the_file_is_nnunets_own(tmp_path):
    (tmp_path / "ours").mkdir()
    (tmp_path / "theirs").mkdir()
    write_dataset_json(tmp_path / "ours", **ARGUMENTS, license="CC0", dataset_name="X", extra={"a": [1, 2]})
    generate_dataset_json(str(tmp_path / "theirs"), {0: "T1", 1: "T2"}, {"background": 0, "organ": 1}, 3, ".nii.gz",
                          license="CC0", converted_by="nnugen", dataset_name="X", extra={"a": [1, 2]})
    assert (tmp_path / "ours" / "dataset.json").read_bytes() == (tmp_path / "theirs" / "dataset.json").read_bytes()
    assert os.listdir(tmp_path / "ours") == ["dataset.json"]  # the scratch folder is gone


def test_a_failed_write_leaves_the_old_file_and_no_scratch(tmp_path, monkeypatch):
    write_dataset_json(tmp_path, **ARGUMENTS, license="CC0")
    before = (tmp_path / "dataset.json").read_bytes()

    def broken(output_folder, *args, **kwargs):
        with open(os.path.join(output_folder, "dataset.json"), "w") as stream:
            stream.write('{"channel_names": ')  # cut short, then the writer dies
        raise OSError("disk full")

    monkeypatch.setattr("nnunetv2.dataset_conversion.generate_dataset_json.generate_dataset_json", broken)
    with pytest.raises(OSError, match="disk full"):
        dataset_json_module.write_dataset_json(tmp_path, **ARGUMENTS, license="other")
    assert (tmp_path / "dataset.json").read_bytes() == before
    assert os.listdir(tmp_path) == ["dataset.json"]


def test_the_same_bytes_are_left_in_place(tmp_path):
    target = write_dataset_json(tmp_path, **ARGUMENTS, license="CC0")
    os.utime(target, (1, 1))
    write_dataset_json(tmp_path, **ARGUMENTS, license="CC0")
    assert target.stat().st_mtime == 1
    write_dataset_json(tmp_path, **{**ARGUMENTS, "num_training": 4}, license="CC0")
    assert json.loads(target.read_text())["numTraining"] == 4


def test_demo_datasets_carry_nnunets_keys_and_their_own(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    spec = PhantomSpec(shape=(16, 16), spacing=(1.0, 1.0))
    phantom = write_phantom_dataset(tmp_path, 951, "Ph", 2, 1, spec=spec)
    lesions = write_lesion_dataset(tmp_path, 952, "Le", 2, 1, 1, seed=0, spec=spec)
    assert maybe_convert_to_dataset_name(951) == phantom.name == "Dataset951_Ph"
    for folder, own in ((phantom, "nnugen_phantom"), (lesions, "nnugen_lesions")):
        written = json.loads((folder / "dataset.json").read_text())
        assert list(written)[:6] == ["channel_names", "labels", "numTraining", "file_ending", "licence",
                                     "converted_by"]
        assert written["licence"] == "CC0" and written["overwrite_image_reader_writer"] == "SimpleITKIO"
        assert written["numTraining"] == len(list((folder / "labelsTr").glob("*.nii.gz")))
        assert own in written
    assert json.loads((phantom / "dataset.json").read_text())["nnugen_phantom"]["seed"] == 0


def test_nnugen_sample_as_a_dataset_writes_it_once_every_label_map_is_there(tmp_path):
    import SimpleITK as sitk

    from nnugen.inference.sample_writing import SampleWriter

    model_json = {"channel_names": {"0": "T1"}, "labels": {"background": 0, "organ": 1}, "file_ending": ".nii.gz"}
    writer = SampleWriter(tmp_path, model_json, None, None, as_dataset="Dataset950_Synth")
    writer.labels.mkdir(parents=True)
    assert writer.finish(["case_0000"]) == []  # its label map is not there yet
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 4), np.uint8)), str(writer.labels / "case_0000.nii.gz"))
    (path,) = writer.finish(["case_0000"])
    reference = tmp_path / "reference"
    reference.mkdir()
    generate_dataset_json(str(reference), {"0": "T1"}, {"background": 0, "organ": 1}, 1, ".nii.gz",
                          dataset_name="Synth", description="synthetic cases written by nnugen_sample (see "
                          "../sampling*.json)", license="as the model's training data", converted_by="nnugen_sample")
    assert path == tmp_path / "Dataset950_Synth" / "dataset.json"
    assert path.read_bytes() == (reference / "dataset.json").read_bytes()
