"""``nnugen_evaluate`` on tiny synthetic NIfTI folders written here: an nnugen layout (``CASE_entropy`` /
``CASE_variance`` images) and an nnU-Net ``--save_probabilities`` layout (``CASE.npz`` + ``CASE.pkl`` as
``export_prediction_from_logits`` writes them). Errors and uncertainty are placed so that every number is known:
AUROC / AUPRC 1.0 for an uncertainty that is high exactly on the errors, scikit-learn on the concatenated arrays for
one that is not, Dice counted by hand, HD95 / NSD as MONAI gives them on the arrays with the files' spacing, ECE from
two confidence levels. Bad input (names, shapes, geometry, NaN): one line naming the case, exit 1, nothing written."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnugen.entrypoints.evaluate import main
from sklearn.metrics import average_precision_score, roc_auc_score

SHAPE = (4, 6, 8)  # (z, y, x) as SimpleITK's array: not a cube, so a swapped axis order cannot pass
CASES = ("case_a", "case_b", "case_c")
DATASET = {"labels": {"background": 0, "liver": 1, "tumour": 2}, "file_ending": ".nii.gz", "numTraining": 3,
           "channel_names": {"0": "CT"}}


def _write(array: np.ndarray, path: Path, spacing=(1.0, 1.5, 2.0), origin=(0.0, 0.0, 0.0)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))


def _case_arrays(index: int):
    """Reference, prediction (errors at known voxels), and a variance map that is not perfect."""
    rng = np.random.default_rng(index)
    reference = rng.integers(0, 3, SHAPE).astype(np.uint8)
    wrong = np.zeros(SHAPE, dtype=bool)
    wrong.flat[rng.choice(wrong.size, 10 + 5 * index, replace=False)] = True
    prediction = np.where(wrong, (reference + 1) % 3, reference).astype(np.uint8)
    variance = (rng.random(SHAPE) * 0.1 + 0.05 * wrong).astype(np.float32)
    return reference, prediction, wrong, variance


@pytest.fixture()
def folders(tmp_path):
    ref, nnugen_pred, nnunet_pred = tmp_path / "labelsTr", tmp_path / "nnugen", tmp_path / "nnunet"
    for folder in (ref, nnugen_pred, nnunet_pred):
        folder.mkdir()
        (folder / "dataset.json").write_text(json.dumps(DATASET))
    arrays = {}
    for index, case in enumerate(CASES):
        reference, prediction, wrong, variance = _case_arrays(index)
        arrays[case] = (reference, prediction, wrong, variance)
        _write(reference, ref / f"{case}.nii.gz")
        for folder in (nnugen_pred, nnunet_pred):
            _write(prediction, folder / f"{case}.nii.gz")
        _write(wrong.astype(np.float32) * 0.7 + 0.1, nnugen_pred / f"{case}_entropy.nii.gz")
        _write(variance, nnugen_pred / f"{case}_variance.nii.gz")
        # what export_prediction_from_logits writes: probabilities (C, z, y, x) in the segmentation's axis order;
        # 0.9 on the predicted label where right, 0.5 where wrong
        probabilities = np.where(wrong, 0.25, 0.05)[None].repeat(3, axis=0).astype(np.float32)
        np.put_along_axis(probabilities, prediction[None].astype(np.int64), np.where(wrong, 0.5, 0.9)[None], axis=0)
        np.savez_compressed(nnunet_pred / f"{case}.npz", probabilities=probabilities)
        with open(nnunet_pred / f"{case}.pkl", "wb") as stream:
            pickle.dump({"spacing": [2.0, 1.5, 1.0], "shape_before_cropping": SHAPE}, stream)
    return ref, nnugen_pred, nnunet_pred, arrays


def _dice(arrays, case, label):
    reference, prediction = arrays[case][0] == label, arrays[case][1] == label
    return 2 * (reference & prediction).sum() / (reference.sum() + prediction.sum())


def test_nnugen_layout_gives_exact_auroc_and_nnunets_summary(folders, capsys):
    ref, pred, _, arrays = folders
    (pred / ".case_a.nii.gz.0a1b2c-99-0123abcd.tmp.nii.gz").write_bytes(b"")  # a killed write's temporary
    assert main(["-ref", str(ref), "-pred", str(pred), "-np", "2"]) == 0  # 2 processes: the pool's path
    out = capsys.readouterr().out
    summary = json.loads((pred / "summary.json").read_text())
    assert [Path(c["prediction_file"]) for c in summary["metric_per_case"]] == [pred / f"{c}.nii.gz" for c in CASES]
    for entry, case in zip(summary["metric_per_case"], CASES):
        assert entry["metrics"]["1"]["Dice"] == pytest.approx(_dice(arrays, case, 1), abs=1e-12)
        assert entry["metrics"]["2"]["Dice"] == pytest.approx(_dice(arrays, case, 2), abs=1e-12)

    result = json.loads((pred / "uncertainty_summary.json").read_text())
    assert result["cases"] == 3 and "ece" not in result["pooled"]
    entropy = result["pooled"]["entropy"]
    assert (entropy["auroc"], entropy["auprc"], entropy["voxels"], entropy["errors"]) == (1.0, 1.0, 3 * 192, 45)
    assert entropy["sources"] == ["CASE_entropy image"] and not entropy["subsampled"]
    errors = np.concatenate([arrays[c][2].ravel() for c in CASES])
    variance = np.concatenate([arrays[c][3].ravel() for c in CASES])
    assert result["pooled"]["variance"]["auroc"] == roc_auc_score(errors, variance)
    assert result["pooled"]["variance"]["auprc"] == average_precision_score(errors, variance)
    per_case = [roc_auc_score(arrays[c][2].ravel(), arrays[c][3].ravel()) for c in CASES]
    assert [e["scores"]["variance"]["auroc"] for e in result["per_case"]] == per_case
    assert result["mean_over_cases"]["variance"]["auroc"] == pytest.approx(np.mean(per_case), abs=1e-15)
    assert "entropy         1.0000       1.0000     1.0000     1.0000  3/3    CASE_entropy image" in out
    assert (f"nnugen_evaluate: wrote {pred / 'summary.json'}, {pred / 'distances_summary.json'} and "
            f"{pred / 'uncertainty_summary.json'}") in out

    import torch
    from monai.metrics import compute_hausdorff_distance, compute_surface_dice

    distances = json.loads((pred / "distances_summary.json").read_text())
    for entry, case in zip(distances["metric_per_case"], CASES):
        reference, prediction = (torch.from_numpy(np.stack([arrays[case][i] == label for label in (0, 1, 2)])[None])
                                 for i in (0, 1))
        spacing = [2.0, 1.5, 1.0]  # (z, y, x) of the arrays
        hd95 = compute_hausdorff_distance(prediction, reference, percentile=95, spacing=spacing)[0]
        nsd = compute_surface_dice(prediction, reference, [1.0, 1.0], spacing=spacing)[0]
        assert entry["spacing"] == spacing
        assert [entry["metrics"][k]["HD95"] for k in ("1", "2")] == pytest.approx(hd95.tolist(), abs=1e-6)
        assert [entry["metrics"][k]["NSD"] for k in ("1", "2")] == pytest.approx(nsd.tolist(), abs=1e-6)
    hd95_1 = np.mean([entry["metrics"]["1"]["HD95"] for entry in distances["metric_per_case"]])
    assert distances["mean"]["1"]["HD95"] == pytest.approx(hd95_1, abs=1e-12)
    assert f"1              {np.mean([_dice(arrays, c, 1) for c in CASES]):>14.4f} {hd95_1:>10.4f}" in out


def test_nnunet_probabilities_layout_gives_softmax_entropy_and_exact_ece(folders, capsys):
    ref, _, pred, arrays = folders
    out_file = pred / "eval" / "mine.json"
    assert main([str(ref), str(pred), "-o", str(out_file), "--np", "1"]) == 0  # nnU-Net's positional form
    result = json.loads((pred / "eval" / "uncertainty_mine.json").read_text())
    assert json.loads(out_file.read_text())["foreground_mean"]["Dice"] == pytest.approx(
        np.mean([np.mean([_dice(arrays, c, label) for c in CASES]) for label in (1, 2)]), abs=1e-12)
    entropy = result["pooled"]["entropy"]
    assert (entropy["auroc"], entropy["auprc"], entropy["sources"]) == (1.0, 1.0, ["softmax entropy of CASE.npz"])
    assert "variance" not in result["pooled"]
    # right voxels: confidence 0.9, accuracy 1 -> gap 0.1; wrong ones: confidence 0.5, accuracy 0 -> gap 0.5
    wrong = sum(arrays[c][2].sum() for c in CASES)
    assert result["pooled"]["ece"]["value"] == pytest.approx((0.1 * (576 - wrong) + 0.5 * wrong) / 576, abs=1e-6)
    assert [e["ece"] for e in result["per_case"]] == pytest.approx(
        [(0.1 * (192 - n) + 0.5 * n) / 192 for n in (10, 15, 20)], abs=1e-6)
    assert "ECE (15 bins): pooled" in capsys.readouterr().out


def test_ignore_label_voxels_are_left_out(folders):
    ref, pred, _, arrays = folders
    labels = {**DATASET["labels"], "ignore": 3}
    dataset_file = ref.parent / "with_ignore.json"
    dataset_file.write_text(json.dumps({**DATASET, "labels": labels}))
    reference = arrays["case_a"][0].copy()
    reference[0] = 3  # the first z slice is ignored
    _write(reference, ref / "case_a.nii.gz")
    assert main(["-ref", str(ref), "-pred", str(pred), "-djfile", str(dataset_file), "-np", "1"]) == 0
    entry = json.loads((pred / "uncertainty_summary.json").read_text())["per_case"][0]
    assert entry["voxels"] == 192 - 48 and entry["errors"] == int(arrays["case_a"][2][1:].sum())


def _nothing_written(folder: Path) -> None:
    assert not list(folder.glob("*summary*.json")) and not list(folder.glob(".*tmp*"))


@pytest.mark.parametrize("breakage, message", [
    ("missing", "prediction folder .* does not exist"),
    ("no_cases", "no case of .* has a reference"),
    ("shape", "prediction shape .* differs from the reference's"),
    ("map_shape", "case_b_entropy.nii.gz has shape"),
    ("unpredicted", "1 reference case\\(s\\) have no prediction .*pass --chill"),
    ("spacing", "case_b.nii.gz: the prediction's spacing .* differs from the reference's"),
    ("origin", "case_a.nii.gz: the prediction's origin .* differs from the reference's"),
    ("nan_prediction", "prediction case_c.nii.gz: .*192 NaN"),
    ("nan_reference", "reference case_a.nii.gz: .*192 NaN"),
    ("nan_map", "uncertainty image case_b_variance.nii.gz: .*192 NaN"),
])
def test_bad_input_is_one_line_exit_1_and_nothing_written(folders, capsys, breakage, message):
    ref, pred, _, _ = folders
    target = pred
    if breakage == "missing":
        target = pred.parent / "nowhere"
    elif breakage == "no_cases":
        for case in CASES:
            (pred / f"{case}.nii.gz").rename(pred / f"other_{case}.nii.gz")
    elif breakage == "shape":
        _write(np.zeros((4, 6, 7), dtype=np.uint8), pred / "case_c.nii.gz")
    elif breakage == "map_shape":
        _write(np.zeros((6, 4, 8), dtype=np.float32), pred / "case_b_entropy.nii.gz")
    elif breakage == "spacing":
        _write(np.zeros(SHAPE, dtype=np.uint8), pred / "case_b.nii.gz", spacing=(1.0, 1.5, 2.5))
    elif breakage == "origin":
        _write(np.zeros(SHAPE, dtype=np.uint8), pred / "case_a.nii.gz", origin=(0.0, 4.0, 0.0))
    elif breakage == "nan_prediction":
        _write(np.full(SHAPE, np.nan, dtype=np.float32), pred / "case_c.nii.gz")
    elif breakage == "nan_reference":
        _write(np.full(SHAPE, np.nan, dtype=np.float32), ref / "case_a.nii.gz")
    elif breakage == "nan_map":
        _write(np.full(SHAPE, np.nan, dtype=np.float32), pred / "case_b_variance.nii.gz")
    else:
        _write(np.zeros(SHAPE, dtype=np.uint8), ref / "case_d.nii.gz")
    assert main(["-ref", str(ref), "-pred", str(target), "-np", "1"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("nnugen_evaluate: error: "), err
    assert __import__("re").search(message, err[0]), err[0]
    _nothing_written(pred)


def test_folders_given_twice_is_a_usage_error(folders):
    ref, pred, _, _ = folders
    with pytest.raises(SystemExit) as exit_info:
        main([str(ref), str(pred), "-ref", str(ref)])
    assert exit_info.value.code == 2


def test_help_does_not_import_torch_or_nnunet():
    code = ("import sys\nfrom nnugen.entrypoints.evaluate import main\ntry:\n    main(['--help'])\n"
            "except SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
            "heavy = sorted(m for m in ('torch', 'nnunetv2', 'sklearn') if m in sys.modules)\n"
            "sys.exit(f'imported {heavy}' if heavy else 0)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _export_as_nnunet(logits: np.ndarray, reference_file: Path, output_truncated: Path) -> None:
    """``CASE.nii.gz`` + ``CASE.npz`` + ``CASE.pkl`` from logits ``(C, z, y, x)`` through nnU-Net's own
    ``export_prediction_from_logits``, with a plan that transposes the axes (``transpose_forward`` [2, 0, 1]), so the
    probabilities come back through nnU-Net's transpose and crop reversal as in a real ``--save_probabilities``."""
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.export_prediction import export_prediction_from_logits
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    forward = [2, 0, 1]
    _, properties = SimpleITKIO().read_images([str(reference_file)])
    shape = logits.shape[1:]
    transposed = tuple(shape[i] for i in forward)
    plans = PlansManager({
        "transpose_forward": forward, "transpose_backward": [int(i) for i in np.argsort(forward)],
        "image_reader_writer": "SimpleITKIO", "label_manager": "LabelManager",
        "configurations": {"3d_fullres": {
            "architecture": {}, "spacing": [properties["spacing"][i] for i in forward],
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None}}}})
    properties.update(shape_before_cropping=transposed, bbox_used_for_cropping=[[0, n] for n in transposed],
                      shape_after_cropping_and_before_resampling=transposed)
    logits_transposed = torch.from_numpy(np.ascontiguousarray(logits.transpose([0, *(i + 1 for i in forward)])))
    export_prediction_from_logits(logits_transposed, properties, plans.get_configuration("3d_fullres"), plans,
                                  DATASET, str(output_truncated), save_probabilities=True, num_threads_torch=1)


def test_probabilities_written_by_nnunets_export_match_the_reference_grid(folders):
    from scipy.special import entr

    ref, _, _, arrays = folders
    pred = ref.parent / "exported"
    pred.mkdir()
    (pred / "dataset.json").write_text(json.dumps(DATASET))
    errors, entropy, confidence, correct = [], [], [], []
    for index, case in enumerate(CASES):
        logits = np.random.default_rng(10 + index).normal(size=(3, *SHAPE)).astype(np.float32) * 2
        _export_as_nnunet(logits, ref / f"{case}.nii.gz", pred / case)
        probabilities = np.load(pred / f"{case}.npz")["probabilities"].astype(np.float64)
        assert probabilities.shape == (3, *SHAPE)
        segmentation = sitk.GetArrayFromImage(sitk.ReadImage(str(pred / f"{case}.nii.gz")))
        np.testing.assert_array_equal(probabilities.argmax(axis=0), segmentation)
        reference = arrays[case][0]
        errors.append((segmentation != reference).ravel())
        entropy.append(entr(probabilities).sum(axis=0).astype(np.float32).ravel())
        confidence.append(probabilities.max(axis=0).ravel())
        correct.append((probabilities.argmax(axis=0) == reference).ravel())
    assert main(["-ref", str(ref), "-pred", str(pred), "-np", "1"]) == 0
    result = json.loads((pred / "uncertainty_summary.json").read_text())
    errors, entropy = np.concatenate(errors), np.concatenate(entropy)
    assert result["pooled"]["entropy"]["auroc"] == pytest.approx(roc_auc_score(errors, entropy), abs=1e-12)
    assert result["pooled"]["entropy"]["auprc"] == pytest.approx(average_precision_score(errors, entropy), abs=1e-12)
    confidence, correct = np.concatenate(confidence), np.concatenate(correct)
    edges = np.linspace(0, 1, 16)
    ece = sum(abs(correct[inside].sum() - confidence[inside].sum())  # Guo et al. eq. 3 with bins (lo, hi]
              for lo, hi in zip(edges[:-1], edges[1:]) if (inside := (confidence > lo) & (confidence <= hi)).any())
    assert result["pooled"]["ece"]["value"] == pytest.approx(ece / confidence.size, abs=1e-7)


def test_the_uncertainty_images_read_are_the_ones_nnugen_predict_writes():
    """evaluation/ may not import inference/ (import direction), so the names are written twice: keep them equal."""
    from nnugen.evaluation.segmentation_evaluation import MAP_NAMES as READ
    from nnugen.inference.uncertainty import MAP_NAMES as WRITTEN

    assert READ == WRITTEN == ("entropy", "variance")
