"""``nnugen_evaluate --generated SYN --real imagesTr`` on tiny NIfTI folders written here: nnugen_sample's plain layout
(``case_0000_0000.nii.gz`` images beside ``case_0000.nii.gz`` label maps, which are not images), MS-SSIM equal to
MONAI's on the arrays, reconstruction PSNR against the hand value for a constant offset, the Fréchet distance of one
feature against the closed form for 1-D Gaussians. Bad input: one line naming the case, exit 1, nothing written."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnugen.entrypoints.evaluate import main

SHAPE = (12, 16, 18)  # (z, y, x)
DATASET = {"channel_names": {"0": "MR"}, "labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz",
           "numTraining": 4}


def _write(array, path, spacing=(1.0, 1.0, 2.0)):
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))


def _image(seed, shape=SHAPE):
    return np.random.default_rng(seed).normal(100, 20, shape).astype(np.float32)


@pytest.fixture()
def folders(tmp_path):
    raw, generated = tmp_path / "Dataset001_Tiny", tmp_path / "sampled"
    (raw / "imagesTr").mkdir(parents=True)
    generated.mkdir()
    (raw / "dataset.json").write_text(json.dumps(DATASET))
    real = {f"real_{i:03d}": _image(i, (13, 17, 18) if i == 0 else SHAPE) for i in range(4)}
    for case, array in real.items():
        _write(array, raw / "imagesTr" / f"{case}_0000.nii.gz")
    synthetic = {f"case_{i:04d}": _image(10 + i) * (1 + 0.1 * i) for i in range(3)}
    for case, array in synthetic.items():
        _write(array, generated / f"{case}_0000.nii.gz")
        _write((array > 110).astype(np.uint8), generated / f"{case}.nii.gz")  # the label map nnugen_sample writes
    (generated / "sampling.json").write_text("{}")
    return raw, generated, real, synthetic


def _crop(array, shape=SHAPE):
    start = [(n - s) // 2 for n, s in zip(array.shape, shape)]
    return array[tuple(slice(b, b + s) for b, s in zip(start, shape))]


def test_generated_against_real_without_features(folders, capsys):
    import torch
    from monai.metrics import MultiScaleSSIMMetric

    from nnugen.evaluation.diversity import ms_ssim_settings

    raw, generated, real, synthetic = folders
    assert main(["--generated", str(generated), "--real", str(raw / "imagesTr")]) == 0
    result = json.loads((generated / "generation_summary.json").read_text())
    assert result["cases"] == {"generated": 3, "real": 4} and result["crop_shape"] == list(SHAPE)
    data_range = float(max(a.max() for a in real.values()) - min(a.min() for a in real.values()))
    assert result["data_range"] == pytest.approx(data_range, rel=1e-6)
    window, weights = ms_ssim_settings(SHAPE)
    metric = MultiScaleSSIMMetric(spatial_dims=3, data_range=data_range, kernel_size=window, weights=weights)
    for name, images in (("generated", list(synthetic.values())), ("real", [_crop(a) for a in real.values()])):
        pairs = [(a, b) for i, a in enumerate(images) for b in images[i + 1:]]
        expected = np.mean([float(metric(torch.from_numpy(a[None, None]), torch.from_numpy(b[None, None])))
                            for a, b in pairs])
        assert result["ms_ssim"][name] == pytest.approx(expected, abs=1e-5)
    assert result["features"] is None and result["reconstructions"] is None
    out = capsys.readouterr().out
    assert "3 generated vs 4 real image(s), cropped to 12x16x18" in out
    assert "no Frechet distance / MMD: no trained nnU-Net given (-d DATASET -c CONFIGURATION -f FOLD)" in out
    assert f"nnugen_evaluate: wrote {generated / 'generation_summary.json'}" in out


def test_reconstructions_get_the_hand_psnr(folders, tmp_path):
    raw, generated, real, _ = folders
    reconstructions = tmp_path / "reconstructed"
    reconstructions.mkdir()
    for case in ("real_001", "real_002"):
        _write(real[case] + 2.0, reconstructions / f"{case}_0000.nii.gz")  # MSE 4
    output = tmp_path / "out" / "gen.json"
    assert main(["--generated", str(generated), "--real", str(raw / "imagesTr"), "--reconstructions",
                 str(reconstructions), "-o", str(output)]) == 0
    result = json.loads(output.read_text())["reconstructions"]
    data_range = float(max(a.max() for a in real.values()) - min(a.min() for a in real.values()))
    assert result["cases"] == 2 and result["identical"] == 0
    assert result["psnr_db_mean"] == pytest.approx(20 * math.log10(data_range) - 10 * math.log10(4.0), abs=1e-3)
    assert [entry["case"] for entry in result["per_case"]] == ["real_001", "real_002"]


def test_frechet_distance_of_one_feature_is_the_closed_form(folders):
    from nnugen.evaluation.generation_evaluation import evaluate_generation

    raw, generated, real, synthetic = folders
    def features(images):  # the mean intensity, and a constant
        return np.stack([images.reshape(len(images), -1).mean(axis=1), np.zeros(len(images))], axis=1)

    result = evaluate_generation(generated, raw / "imagesTr", DATASET, features=features)
    fake = np.array([a.mean() for a in synthetic.values()], dtype=np.float64)
    true = np.array([_crop(a).mean() for a in real.values()], dtype=np.float64)
    # Fréchet distance of 1-D Gaussians: (m1 - m2)^2 + (s1 - s2)^2, sample variances (N - 1)
    expected = (fake.mean() - true.mean()) ** 2 + (fake.std(ddof=1) - true.std(ddof=1)) ** 2
    assert result["features"]["frechet"] == pytest.approx(expected, rel=1e-6)
    assert result["features"]["dimensions"] == 2 and result["features"]["gaussian_mmd"] > 0


def test_several_generated_folders_are_each_scored_as_alone(folders, tmp_path, capsys):
    import shutil

    raw, generated, _, _ = folders
    other = tmp_path / "control"
    shutil.copytree(generated, other)
    _write(_image(99) * 3, other / "case_0001_0000.nii.gz")
    assert main(["--generated", str(other), "--real", str(raw / "imagesTr")]) == 0
    alone = json.loads((other / "generation_summary.json").read_text())
    (other / "generation_summary.json").unlink()
    capsys.readouterr()
    assert main(["--generated", str(generated), str(other), "--real", str(raw / "imagesTr")]) == 0
    both = [json.loads((g / "generation_summary.json").read_text()) for g in (generated, other)]
    assert both[1] == alone and both[0]["generated_folder"] == str(generated)
    assert both[0]["ms_ssim"]["generated"] != both[1]["ms_ssim"]["generated"]
    assert capsys.readouterr().out.count("nnugen_evaluate: wrote") == 2


def test_several_generated_folders_write_nothing_when_one_is_bad(folders, tmp_path, capsys):
    raw, generated, _, _ = folders
    bad = tmp_path / "bad"
    bad.mkdir()
    _write(_image(5), bad / "case_0000_0000.nii.gz")  # one image: no diversity
    assert main(["--generated", str(generated), str(bad), "--real", str(raw / "imagesTr")]) == 1
    assert "the generated folder holds 1 image(s)" in capsys.readouterr().err
    _nothing_written(generated, bad)
    for argv in (["--generated", str(generated), str(bad), "--real", str(raw / "imagesTr"), "-o",
                  str(tmp_path / "x.json")],
                 ["--generated", str(generated), str(generated), "--real", str(raw / "imagesTr")]):
        assert main(argv) == 1
        assert "nnugen_evaluate: error: " in capsys.readouterr().err
    _nothing_written(generated, bad, tmp_path)


def _nothing_written(*folders: Path) -> None:
    for folder in folders:
        assert not list(folder.rglob("generation_summary*.json")) and not list(folder.rglob(".*tmp*"))


@pytest.mark.parametrize("breakage, message", [
    ("nan", "generated case case_0001: case_0001_0000.nii.gz: .*NaN"),
    ("channel", "case_0002 in .* has channel file\\(s\\) _0001, dataset.json names 1 channel"),
    ("one_image", "the generated folder holds 1 image\\(s\\)"),
    ("unknown_reconstruction", "reconstruction real_999 has no real case of that name"),
    ("reconstruction_shape", "real_002: reconstruction shape .* differs from the real image's"),
    ("reconstruction_spacing", "real_002: the reconstruction's spacing .* differs from the reference's"),
    ("no_dataset_json", "dataset.json not found; pass the dataset's dataset.json with -djfile"),
])
def test_bad_input_is_one_line_exit_1_and_nothing_written(folders, tmp_path, capsys, breakage, message):
    raw, generated, real, _ = folders
    reconstructions = tmp_path / "reconstructed"
    reconstructions.mkdir()
    _write(real["real_002"], reconstructions / "real_002_0000.nii.gz")
    if breakage == "nan":
        array = _image(11)
        array[3, 4, 5] = np.nan
        _write(array, generated / "case_0001_0000.nii.gz")
    elif breakage == "channel":
        (generated / "case_0002_0000.nii.gz").rename(generated / "case_0002_0001.nii.gz")
    elif breakage == "one_image":
        for i in (1, 2):
            (generated / f"case_{i:04d}_0000.nii.gz").unlink()
            (generated / f"case_{i:04d}.nii.gz").unlink()
    elif breakage == "unknown_reconstruction":
        _write(real["real_002"], reconstructions / "real_999_0000.nii.gz")
    elif breakage == "reconstruction_shape":
        _write(real["real_002"][1:], reconstructions / "real_002_0000.nii.gz")
    elif breakage == "reconstruction_spacing":
        _write(real["real_002"], reconstructions / "real_002_0000.nii.gz", spacing=(1.0, 1.0, 2.5))
    else:
        (raw / "dataset.json").unlink()
    assert main(["--generated", str(generated), "--real", str(raw / "imagesTr"), "--reconstructions",
                 str(reconstructions)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("nnugen_evaluate: error: "), err
    assert re.search(message, err[0]), err[0]
    _nothing_written(generated, raw, reconstructions)


def test_modes_do_not_mix(folders):
    raw, generated, _, _ = folders
    for argv in (["--generated", str(generated), "--real", str(raw), "-ref", str(raw)],
                 ["--generated", str(generated)], [str(raw), str(generated), "-d", "1"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2


def test_encoder_features_get_nnunets_normalisation_and_axis_order(tmp_path):
    """The encoder sees what nnU-Net's network saw in training: z-scored with the plans' statistics and transposed
    by ``transpose_forward``."""
    import torch

    from nnugen.evaluation.generation_evaluation import encoder_features

    fold = tmp_path / "Model__nnugenPlans__3d_fullres" / "fold_0"
    fold.mkdir(parents=True)
    plans = {"transpose_forward": [2, 0, 1], "transpose_backward": [1, 2, 0], "configurations": {"3d_fullres": {
        "architecture": {}, "normalization_schemes": ["ZScoreNormalization"], "use_mask_for_norm": [False]}},
        "foreground_intensity_properties_per_channel": {"0": {"mean": 100.0, "std": 20.0}}}
    (fold.parent / "plans.json").write_text(json.dumps(plans))
    seen = []

    class Encoder:
        fold_folder = fold

        def features(self, images):
            seen.append(images)
            return images.flatten(1)[:, :3]

    images = np.stack([_image(i, (1, 4, 5, 6)) for i in range(2)])
    vectors = encoder_features(Encoder(), "3d_fullres")(images)
    expected = ((images - images.mean(axis=(1, 2, 3, 4), keepdims=True))
                / images.std(axis=(1, 2, 3, 4), keepdims=True)).transpose(0, 1, 4, 2, 3)
    assert seen[0].shape == (2, 1, 6, 4, 5)
    torch.testing.assert_close(seen[0], torch.from_numpy(expected.astype(np.float32)), atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(vectors, seen[0].flatten(1)[:, :3].numpy())


def test_a_dataset_json_that_is_not_json_is_a_malformed_file(folders, capsys):
    raw, generated, _, _ = folders
    (raw / "dataset.json").write_text("{")
    assert main(["--generated", str(generated), "--real", str(raw / "imagesTr")]) == 2
    assert "dataset.json is not valid JSON" in capsys.readouterr().err
    _nothing_written(generated)
