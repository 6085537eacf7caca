"""write_mni_lesion_slices: lesions inside the brain of the lesion slices only, and dataset.json's nnugen_lesions
listing the cases as the anomaly benchmark reads them."""

import json

import numpy as np
import pytest

pytest.importorskip("nilearn")


def _read(path):
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from nnugen.demo.mni_lesion_slices import write_mni_lesion_slices

    return write_mni_lesion_slices(tmp_path_factory.mktemp("raw"), 983, "MniLesions", train_volumes=1, stride=8)


def test_lesions_lie_inside_the_brain_of_the_lesion_slices_only(dataset):
    from nnugen.demo.mni_dataset import augmented_case, brain_slices, load_mni152
    from nnugen.demo.mni_lesion_slices import brain_mask

    entry = json.loads((dataset / "dataset.json").read_text())["nnugen_lesions"]
    t1, label, _ = load_mni152()
    for volume in (1, 2):  # the tuning and the test volume: the brain of each slice from the volume's own labels
        _, labels = augmented_case(t1, label, np.random.default_rng([0, volume]))
        for index, (_, label_slice) in enumerate(brain_slices(labels, labels, 0)[::8]):
            case = f"MniLesions_{volume:02d}{index:02d}"
            split = "Tr" if volume == 1 else "Ts"
            lesion = _read(dataset / f"labels{split}" / f"{case}.nii.gz") > 0
            assert lesion.any() and not (lesion[0] & ~brain_mask(label_slice[0])).any(), case
            families = entry["tuning_families"] if volume == 1 else entry["test_families"]
            assert entry["lesion_families"][case] in families
    for case in entry["healthy_cases"]:
        assert not _read(dataset / "labelsTr" / f"{case}.nii.gz").any(), case


def test_dataset_json_lists_healthy_held_out_and_lesion_cases(dataset):
    entry = json.loads((dataset / "dataset.json").read_text())["nnugen_lesions"]
    healthy, held_out = entry["healthy_cases"], entry["held_out_healthy"]
    assert held_out > 0 and all(c.startswith("MniLesions_03") for c in healthy[-held_out:])
    assert all(c.startswith("MniLesions_00") for c in healthy[:-held_out])
    tuning = [c for c in entry["lesion_families"] if (dataset / "labelsTr" / f"{c}.nii.gz").is_file()]
    test = [c for c in entry["lesion_families"] if (dataset / "labelsTs" / f"{c}.nii.gz").is_file()]
    assert tuning and test and len(tuning) + len(test) == len(entry["lesion_families"])
    assert entry["numTest"] == len(test)
    assert (dataset / "healthy_cases.txt").read_text().split() == healthy
    images = {p.name for p in (dataset / "imagesTr").iterdir()}
    assert images == {f"{c}_0000.nii.gz" for c in [*healthy, *tuning]}
    assert _read(dataset / "imagesTr" / f"{healthy[0]}_0000.nii.gz").shape[0] == 1  # one 2D slice per case
