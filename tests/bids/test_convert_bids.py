"""``nnugen_convert_bids`` on a small BIDS tree built here: sub-01 with two sessions, sub-02 without sessions (its T1w
an uncompressed .nii), sub-03 without a derivative; T1w + T2w per case; spine-generic style labels
(``derivatives/labels/..._T2w_seg-manual.nii.gz``) and ``desc-brain_mask`` masks. The result must pass nnU-Net's
own ``verify_dataset_integrity``; bad input gives exit code 1, one line on stderr and no folder left behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nnugen.entrypoints.convert_bids import main

pytest.importorskip("bids")

SHAPE = (16, 16, 12)
CASES = (("01", "01"), ("01", "02"), ("02", None), ("03", None))
LABELLED = (("01", "01"), ("01", "02"), ("02", None))


def _affine() -> np.ndarray:
    """Anisotropic spacing, a 20-degree rotation about z and an off-centre origin."""
    angle = np.deg2rad(20.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 0.9, 2.5])
    affine[:3, 3] = [-12.5, 30.25, 7.0]
    return affine


def _write(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, _affine() if affine is None else affine), str(path))
    return path


def _name(subject: str, session: str | None) -> str:
    return f"sub-{subject}" + (f"_ses-{session}" if session else "")


def _anat(root: Path, subject: str, session: str | None) -> Path:
    return root / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"


def _labels_anat(root: Path, subject: str, session: str | None) -> Path:
    return _anat(root / "derivatives" / "labels", subject, session)


@pytest.fixture
def bids_root(tmp_path: Path) -> Path:
    root = tmp_path / "bids"
    root.mkdir()
    (root / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.8.0"}))
    rng = np.random.default_rng(0)
    for subject, session in CASES:
        for contrast in ("T1w", "T2w"):
            ending = ".nii" if (subject, contrast) == ("02", "T1w") else ".nii.gz"
            image = rng.normal(100, 20, SHAPE).astype(np.float32)
            _write(_anat(root, subject, session) / f"{_name(subject, session)}_{contrast}{ending}", image)
    labels = root / "derivatives" / "labels"
    labels.mkdir(parents=True)
    (labels / "dataset_description.json").write_text(json.dumps({
        "Name": "labels", "BIDSVersion": "1.8.0", "PipelineDescription": {"Name": "manual"},
        "GeneratedBy": [{"Name": "manual"}]}))
    soft = rng.random(SHAPE).astype(np.float32)  # a soft float mask: binarised at 0.5
    binary_uint8 = (rng.random(SHAPE) > 0.6).astype(np.uint8)
    binary_float = (rng.random(SHAPE) > 0.6).astype(np.float32)
    for (subject, session), mask in zip(LABELLED, (soft, binary_uint8, binary_float)):
        _write(_labels_anat(root, subject, session) / f"{_name(subject, session)}_T2w_seg-manual.nii.gz", mask)
        brain = np.zeros(SHAPE, np.uint8)
        brain[4:12, 4:12, 3:9] = 1
        _write(_labels_anat(root, subject, session) / f"{_name(subject, session)}_desc-brain_mask.nii.gz", brain)
    return root


@pytest.fixture
def raw_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    raw = tmp_path / "nnUNet_raw"
    raw.mkdir()
    monkeypatch.setenv("nnUNet_raw", str(raw))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "nnUNet_preprocessed"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "nnUNet_results"))
    return raw


def _voxels(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def _assert_same_grid(path: Path, other: Path) -> None:
    """Same size; spacing, origin and direction equal up to the float32 rounding of a rewritten NIfTI header."""
    first, second = sitk.ReadImage(str(path)), sitk.ReadImage(str(other))
    assert first.GetSize() == second.GetSize()
    for getter in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(first, getter)(), getattr(second, getter)(), rtol=0, atol=1e-6)


def _verify_with_nnunet(folder: Path, capfd: pytest.CaptureFixture) -> None:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    capfd.readouterr()
    verify_dataset_integrity(str(folder), num_processes=1)
    output = capfd.readouterr().out
    assert "verify_dataset_integrity Done" in output
    assert "Error" not in output and "Warning" not in output and "WARNING!" not in output, output


def _labels(folder: Path) -> dict[str, int]:
    return json.loads((folder / "dataset.json").read_text())["labels"]


# --- conversion --------------------------------------------------------------------------------------------------


def test_seg_conversion_passes_nnunet_integrity_check(bids_root, raw_root, capfd):
    assert main([str(bids_root), "501", "Tiny", "--contrasts", "T1w", "T2w", "--labels", "labels:seg-manual"]) == 0
    folder = raw_root / "Dataset501_Tiny"
    assert sorted(p.name for p in raw_root.iterdir()) == ["Dataset501_Tiny"]  # no temporary folder left
    identifiers = ["Tiny_sub-01_ses-01", "Tiny_sub-01_ses-02", "Tiny_sub-02"]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == [f"{c}.nii.gz" for c in identifiers]
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == sorted(
        f"{c}_{channel:04d}.nii.gz" for c in identifiers for channel in (0, 1))
    dataset = json.loads((folder / "dataset.json").read_text())
    assert dataset["channel_names"] == {"0": "T1w", "1": "T2w"}
    assert dataset["labels"] == {"background": 0, "seg-manual": 1}
    assert dataset["numTraining"] == 3 and dataset["file_ending"] == ".nii.gz"
    assert dataset["name"] == "Tiny" and dataset["converted_by"] == "nnugen_convert_bids"
    assert dataset["description"].startswith("converted from the BIDS dataset 'tiny' (folder ")
    # nnU-Net's own writer made it, and no path of this machine travels with the dataset (issue 17)
    from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

    generate_dataset_json(str(raw_root), {0: "T1w", 1: "T2w"}, {"background": 0, "seg-manual": 1}, 3, ".nii.gz",
                          dataset_name="Tiny", description=dataset["description"], license=dataset["licence"],
                          converted_by="nnugen_convert_bids")
    assert (folder / "dataset.json").read_bytes() == (raw_root / "dataset.json").read_bytes()
    (raw_root / "dataset.json").unlink()
    assert str(bids_root.resolve()) not in (folder / "dataset.json").read_text()
    assert not (folder / "healthy_cases.txt").exists()

    for (subject, session), identifier in zip(LABELLED, identifiers):
        anat, name = _anat(bids_root, subject, session), _name(subject, session)
        for channel, contrast in enumerate(("T1w", "T2w")):
            source = next(anat.glob(f"{name}_{contrast}.nii*"))
            written = folder / "imagesTr" / f"{identifier}_{channel:04d}.nii.gz"
            if source.name.endswith(".nii.gz"):
                assert written.read_bytes() == source.read_bytes()
            np.testing.assert_array_equal(_voxels(written), _voxels(source))
            _assert_same_grid(written, source)
        source_label = _labels_anat(bids_root, subject, session) / f"{name}_T2w_seg-manual.nii.gz"
        label = _voxels(folder / "labelsTr" / f"{identifier}.nii.gz")
        assert np.issubdtype(label.dtype, np.integer)
        np.testing.assert_array_equal(label, (_voxels(source_label) > 0.5).astype(label.dtype))
        _assert_same_grid(folder / "labelsTr" / f"{identifier}.nii.gz", written)
    assert 0.3 < label.mean() < 0.5

    out = capfd.readouterr().out
    assert "skipped sub-03: no file ending in _seg-manual.nii[.gz] in derivatives/labels" in out
    assert "wrote 3 case(s)" in out
    _verify_with_nnunet(folder, capfd)


def test_anomaly_task_keeps_unlabelled_subjects_as_healthy(bids_root, raw_root, capfd):
    assert main([str(bids_root), "502", "Tiny", "--contrasts", "T2w", "--labels", "labels:seg-manual",
                 "--task", "anomaly"]) == 0
    folder = raw_root / "Dataset502_Tiny"
    assert (folder / "healthy_cases.txt").read_text() == "Tiny_sub-03\n"
    assert json.loads((folder / "dataset.json").read_text())["numTraining"] == 4
    healthy = _voxels(folder / "labelsTr" / "Tiny_sub-03.nii.gz")
    assert healthy.shape == SHAPE[::-1] and not healthy.any()
    assert _voxels(folder / "labelsTr" / "Tiny_sub-02.nii.gz").any()
    _verify_with_nnunet(folder, capfd)


def test_healthy_list_gives_zero_labels_even_where_a_label_exists(bids_root, raw_root, tmp_path, capsys):
    healthy_list = tmp_path / "healthy.txt"
    healthy_list.write_text("# controls\nsub-02\n\n")
    assert main([str(bids_root), "503", "Tiny", "--contrasts", "T1w", "--labels", "labels:seg-manual",
                 "--healthy-list", str(healthy_list)]) == 0
    folder = raw_root / "Dataset503_Tiny"
    assert (folder / "healthy_cases.txt").read_text() == "Tiny_sub-02\n"
    assert not _voxels(folder / "labelsTr" / "Tiny_sub-02.nii.gz").any()
    assert _voxels(folder / "labelsTr" / "Tiny_sub-01_ses-01.nii.gz").any()
    assert "skipped sub-03" in capsys.readouterr().out  # --task seg: still no label, still skipped


def test_desc_brain_mask_derivatives(bids_root, raw_root):
    assert main([str(bids_root), "504", "Brain", "--contrasts", "T2w", "--labels", "labels:desc-brain_mask",
                 "--label-names", "brain"]) == 0
    folder = raw_root / "Dataset504_Brain"
    assert _labels(folder) == {"background": 0, "brain": 1}
    label = _voxels(folder / "labelsTr" / "Brain_sub-02.nii.gz")
    assert label.sum() == 8 * 8 * 6 and set(np.unique(label)) == {0, 1}


def test_anomaly_task_without_labels_makes_every_case_healthy(bids_root, raw_root):
    assert main([str(bids_root), "505", "Healthy", "--contrasts", "T1w", "T2w", "--task", "anomaly"]) == 0
    folder = raw_root / "Dataset505_Healthy"
    assert _labels(folder) == {"background": 0, "lesion": 1}
    assert (folder / "healthy_cases.txt").read_text().split() == [
        "Healthy_sub-01_ses-01", "Healthy_sub-01_ses-02", "Healthy_sub-02", "Healthy_sub-03"]


def test_integer_labels_are_kept_and_named_without_gaps(bids_root, raw_root, capsys):
    path = _labels_anat(bids_root, "02", None) / "sub-02_T2w_seg-manual.nii.gz"
    labels = np.zeros(SHAPE, np.int16)
    labels[2:5, 2:5, 2:5], labels[8:10, 8:10, 8:10] = 1, 3
    _write(path, labels)
    assert main([str(bids_root), "506", "Multi", "--contrasts", "T2w", "--labels", "labels:seg-manual"]) == 0
    folder = raw_root / "Dataset506_Multi"
    assert _labels(folder) == {"background": 0, "seg-manual_1": 1, "seg-manual_2": 2, "seg-manual_3": 3}
    np.testing.assert_array_equal(_voxels(folder / "labelsTr" / "Multi_sub-02.nii.gz"), labels.transpose(2, 1, 0))
    assert main([str(bids_root), "507", "Multi", "--contrasts", "T2w", "--labels", "labels:seg-manual",
                 "--label-names", "cord", "gap", "lesion"]) == 0
    assert _labels(raw_root / "Dataset507_Multi") == {"background": 0, "cord": 1, "gap": 2, "lesion": 3}
    _fails([str(bids_root), "508", "Multi", "--contrasts", "T2w", "--labels", "labels:seg-manual", "--label-names",
            "lesion"], capsys, raw_root, "gives 1 name(s) but the labels hold values up to 3")


def test_label_of_the_first_contrast_wins_and_true_ambiguity_skips(bids_root, raw_root, capsys):
    anat = _labels_anat(bids_root, "01", "01")
    t1_label = _write(anat / "sub-01_ses-01_T1w_seg-manual.nii.gz", np.ones(SHAPE, np.uint8))
    _write(_labels_anat(bids_root, "02", None) / "sub-02_acq-b_T2w_seg-manual.nii.gz", np.ones(SHAPE, np.uint8))
    assert main([str(bids_root), "508", "Pick", "--contrasts", "T1w", "T2w", "--labels", "labels:seg-manual"]) == 0
    folder = raw_root / "Dataset508_Pick"
    np.testing.assert_array_equal(_voxels(folder / "labelsTr" / "Pick_sub-01_ses-01.nii.gz"), _voxels(t1_label))
    out = capsys.readouterr().out
    assert "skipped sub-02: 2 files in derivatives/labels end in _seg-manual.nii[.gz]" in out
    assert "--labels labels:acq-b_T2w_seg-manual" in out
    assert not (folder / "labelsTr" / "Pick_sub-02.nii.gz").exists()


def test_two_images_of_one_contrast_skip_the_case(bids_root, raw_root, capsys):
    _write(_anat(bids_root, "02", None) / "sub-02_run-2_T2w.nii.gz", np.zeros(SHAPE, np.float32))
    assert main([str(bids_root), "509", "Runs", "--contrasts", "T2w", "--labels", "labels:seg-manual"]) == 0
    out = capsys.readouterr().out
    assert "skipped sub-02: 2 images end in _T2w.nii[.gz]" in out and "--contrasts run-2_T2w" in out
    assert main([str(bids_root), "510", "Runs", "--contrasts", "run-2_T2w", "--task", "anomaly"]) == 0
    assert (raw_root / "Dataset510_Runs" / "healthy_cases.txt").read_text() == "Runs_sub-02\n"


def test_channels_within_tolerance_are_written_on_one_grid(bids_root, raw_root):
    affine = _affine()
    affine[:3, 3] += 2e-6
    path = _anat(bids_root, "02", None) / "sub-02_T2w.nii.gz"
    _write(path, np.asanyarray(nib.load(str(path)).dataobj), affine)
    assert main([str(bids_root), "511", "Tol", "--contrasts", "T1w", "T2w", "--labels", "labels:seg-manual"]) == 0
    images = raw_root / "Dataset511_Tol" / "imagesTr"
    _assert_same_grid(images / "Tol_sub-02_0001.nii.gz", images / "Tol_sub-02_0000.nii.gz")


def test_pybids_indexes_derivative_names_by_subject_and_session(bids_root):
    """What the matching relies on: pybids puts every derivative file under its subject and session, whatever
    entities it reads from the rest of the name (0.22: seg-manual -> ``segmentation``, no suffix)."""
    from nnugen.bids.bids_cases import open_layout

    layout = open_layout(bids_root)
    (labels,) = layout.derivatives.values()
    entities = {Path(f.path).name: f.entities for f in labels.get(extension=".nii.gz")}
    seg = entities["sub-01_ses-02_T2w_seg-manual.nii.gz"]
    mask = entities["sub-02_desc-brain_mask.nii.gz"]
    assert (seg["subject"], seg["session"]) == ("01", "02") and "session" not in mask
    assert mask["subject"] == "02"


# --- bad input ---------------------------------------------------------------------------------------------------


def _fails(argv: list[str], capsys: pytest.CaptureFixture, raw_root: Path, *expected: str) -> str:
    before = sorted(p.name for p in raw_root.iterdir()) if raw_root.is_dir() else []
    assert main(argv) == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnugen_convert_bids: error: "), err
    for text in expected:
        assert text in lines[0], lines[0]
    after = sorted(p.name for p in raw_root.iterdir()) if raw_root.is_dir() else []
    assert after == before, "a dataset or temporary folder was left behind"
    return lines[0]


SEG = ["--contrasts", "T1w", "T2w", "--labels", "labels:seg-manual"]


def test_not_a_bids_root(bids_root, raw_root, capsys):
    (bids_root / "dataset_description.json").unlink()
    _fails([str(bids_root), "520", "X", *SEG], capsys, raw_root, "is not a BIDS root", "dataset_description.json")


@pytest.mark.parametrize("description", ["dataset_description.json", "derivatives/labels/dataset_description.json"])
def test_broken_dataset_description_is_named(bids_root, raw_root, capsys, description):
    (bids_root / description).write_text("{not json")
    _fails([str(bids_root), "520", "X", *SEG], capsys, raw_root, description, "is not valid JSON")


def test_unknown_contrast_lists_the_contrasts_found(bids_root, raw_root, capsys):
    _fails([str(bids_root), "520", "X", "--contrasts", "T1w", "FLAIR", "--task", "anomaly"], capsys, raw_root,
           "unknown contrast(s) FLAIR", "T1w, T2w")


def test_channels_on_different_grids(bids_root, raw_root, capsys):
    path = _anat(bids_root, "02", None) / "sub-02_T2w.nii.gz"
    _write(path, np.zeros(SHAPE, np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
    _fails([str(bids_root), "520", "X", *SEG], capsys, raw_root, "case X_sub-02", "sub-02_T1w.nii",
           "sub-02_T2w.nii.gz", "spacing")


def test_label_on_another_grid(bids_root, raw_root, capsys):
    _write(_labels_anat(bids_root, "02", None) / "sub-02_T2w_seg-manual.nii.gz", np.zeros((16, 16, 10), np.uint8))
    _fails([str(bids_root), "520", "X", *SEG], capsys, raw_root, "case X_sub-02", "sub-02_T2w_seg-manual.nii.gz",
           "size")


def test_no_case_at_all(bids_root, raw_root, capsys):
    _fails([str(bids_root), "520", "X", "--contrasts", "T1w", "--labels", "labels:lesion-manual"], capsys, raw_root,
           "no case to convert", "4 subject/session(s) skipped")


def test_existing_dataset_id(bids_root, raw_root, capsys):
    (raw_root / "Dataset520_Other").mkdir()
    _fails([str(bids_root), "520", "X", *SEG], capsys, raw_root, "dataset ID 520 is taken", "Dataset520_Other",
           "pick another DATASET_ID or remove")
    assert not any((raw_root / "Dataset520_Other").iterdir())


def test_pybids_missing(bids_root, raw_root, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "bids", None)
    _fails([str(bids_root), "520", "X", *SEG], capsys, raw_root, "install nnugen[bids]")


@pytest.mark.parametrize(("argv", "expected"), [
    (["--contrasts", "T1w", "--labels", "nope:seg-manual"], "no folder derivatives/nope"),
    (["--contrasts", "T1w", "--labels", "seg-manual"], "expected PIPELINE:SUFFIX"),
    (["--contrasts", "T1w"], "--task seg needs --labels"),
    (["--contrasts", "T1w", "T1w", "--task", "anomaly"], "different contrasts"),
    (["--contrasts", "T1w", "--task", "anomaly", "--label-names", "background"], "not 'background'"),
])
def test_bad_options(bids_root, raw_root, capsys, argv, expected):
    _fails([str(bids_root), "520", "X", *argv], capsys, raw_root, expected)


def test_bad_name_id_and_environment(bids_root, raw_root, capsys, monkeypatch):
    _fails([str(bids_root), "0", "X", *SEG], capsys, raw_root, "1 to 999")
    _fails([str(bids_root), "520", "my data", *SEG], capsys, raw_root, "letters, digits")
    monkeypatch.delenv("nnUNet_raw")
    _fails([str(bids_root), "520", "X", *SEG], capsys, raw_root, "nnUNet_raw is not set")


def test_pipeline_without_dataset_description(bids_root, raw_root, capsys):
    (bids_root / "derivatives" / "labels" / "dataset_description.json").unlink()
    _fails([str(bids_root), "520", "X", *SEG], capsys, raw_root, "needs a dataset_description.json")


def test_healthy_list_with_unknown_subject(bids_root, raw_root, tmp_path, capsys):
    healthy_list = tmp_path / "healthy.txt"
    healthy_list.write_text("sub-09\n")
    _fails([str(bids_root), "520", "X", *SEG, "--healthy-list", str(healthy_list)], capsys, raw_root, "sub-09")
    _fails([str(bids_root), "520", "X", *SEG, "--healthy-list", str(tmp_path / "missing.txt")], capsys, raw_root,
           "cannot read --healthy-list")


def test_help_imports_neither_pybids_nor_simpleitk():
    code = ("import sys, nnugen.entrypoints.convert_bids\n"
            "heavy = [m for m in ('bids', 'SimpleITK', 'torch', 'nnunetv2') if m in sys.modules]\n"
            "sys.exit(1 if heavy else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
