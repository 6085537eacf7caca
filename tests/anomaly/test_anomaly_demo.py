"""The anomaly step of nnugen_demo (smaller than its own size) through the real CLIs: it trains on healthy
phantoms, segments the held-out lesions with nnUNetv2_predict, writes maps with nnugen_predict and reports scores it
computed from them."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def test_the_anomaly_demo_trains_segments_and_scores_held_out_lesions(tmp_path, monkeypatch):
    import SimpleITK as sitk

    from nnugen.anomaly import dice
    from nnugen.demo.anomaly_demo import DATASET_ID, DATASET_NAME, TRAINER, AnomalyDemoSize, run_anomaly_demo

    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    monkeypatch.setenv("nnUNet_def_n_proc", "2")
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")
    monkeypatch.delenv("nnUNet_extTrainer", raising=False)  # the CLIs must find the trainer themselves
    messages: list[str] = []
    size = AnomalyDemoSize((64, 64), n_healthy=8, n_val_lesion=2, n_test_lesion=3, epochs=2, iterations=20, steps=4,
                           seeds=1)
    section = run_anomaly_demo(tmp_path, size, device="cpu", say=messages.append, log=tmp_path / "log.txt")
    result = section.numbers

    assert result["cases"] == size.n_test_lesion and 0 < result["prevalence"] < 0.2
    assert result["prevalence"] <= result["pixel_auprc"] <= 1 and 0 <= result["dice"] <= 1
    assert any(f"pixel AUPRC {result['pixel_auprc']:.3f}" in m for m in messages)
    labels = tmp_path / "nnUNet_raw" / f"Dataset{DATASET_ID}_{DATASET_NAME}2D" / "labelsTs"
    segmentations, maps = tmp_path / "predictions" / TRAINER, tmp_path / "predictions" / f"{TRAINER}_maps"
    read = [(sitk.GetArrayFromImage(sitk.ReadImage(str(segmentations / p.name))) == 1,
             sitk.GetArrayFromImage(sitk.ReadImage(str(p))) > 0) for p in sorted(labels.glob("*.nii.gz"))]
    # the Dice it prints is the pooled Dice of the files nnUNetv2_predict wrote
    assert result["dice"] == pytest.approx(dice(np.concatenate([p.ravel() for p, _ in read]),
                                                np.concatenate([lab.ravel() for _, lab in read])))
    assert len(list(maps.glob("*_anomaly.nii.gz"))) == len(list(maps.glob("*_counterfactual.nii.gz"))) == len(read)
    # the checks say what the numbers show, and the picture is there
    above_chance, overlap = section.checks
    assert above_chance.passed == (result["pixel_auprc"] >= 3 * result["prevalence"])
    assert overlap.passed == (result["dice"] >= 0.2)
    assert section.pictures == [tmp_path / "pictures" / "anomaly.png"] and section.pictures[0].is_file()


def test_the_real_anomaly_demo_trains_on_healthy_mni_slices_and_scores_the_held_out_volume(tmp_path, monkeypatch):
    import json

    from nnugen.demo.anomaly_demo import (
        MNI_DATASET_ID,
        MNI_DATASET_NAME,
        SLICE_STRIDE,
        AnomalyDemoSize,
        run_anomaly_demo,
    )

    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(variable, str(tmp_path / variable))
    monkeypatch.setenv("nnUNet_def_n_proc", "2")
    monkeypatch.setenv("nnUNet_n_proc_DA", "1")
    size = AnomalyDemoSize((), 1, 1, 1, epochs=1, iterations=4, steps=2, seeds=1, real=True,
                           settings=("memory.batch_size=4",))
    section = run_anomaly_demo(tmp_path, size, device="cpu", say=lambda line: None, log=tmp_path / "log.txt")
    folder = f"Dataset{MNI_DATASET_ID}_{MNI_DATASET_NAME}"
    raw = tmp_path / "nnUNet_raw" / folder
    lesions = json.loads((raw / "dataset.json").read_text())["nnugen_lesions"]
    (split,) = json.loads((tmp_path / "nnUNet_preprocessed" / folder / "splits_final.json").read_text())
    # trained on the first volume's healthy slices only: the held-out healthy volume stays out of training
    assert split["train"] == lesions["healthy_cases"][: -lesions["held_out_healthy"]]
    assert all(case.startswith(f"{MNI_DATASET_NAME}_00") for case in split["train"])
    assert lesions["anatomy"]["stride"] == SLICE_STRIDE
    assert section.numbers["cases"] == len(list((raw / "labelsTs").glob("*.nii.gz"))) > 0
    assert "healthy MNI152 slices" in section.lines[0]
