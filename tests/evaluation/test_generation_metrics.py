"""The offline generation metrics with exact expectations: PSNR / SSIM of known pairs, MS-SSIM scales that fit
small 2D and 3D patches, and the Fréchet distance and MMD of identical, shifted and independent feature sets."""

import math

import numpy as np
import pytest
import torch

from nnugen.evaluation.diversity import WEIGHTS, mean_pairwise_ms_ssim, ms_ssim, ms_ssim_settings
from nnugen.evaluation.encoder_features import nnunet_normalised
from nnugen.evaluation.feature_distances import frechet_distance, gaussian_mmd
from nnugen.evaluation.reconstruction import psnr, ssim, window_size

SHAPES = {"2d": (64, 64), "3d": (32, 32, 32)}


def _smooth(shape, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [-1, 1], (batch, 1, *shape)."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 1, *(max(2, n // 8) for n in shape), generator=generator)
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return torch.nn.functional.interpolate(coarse, size=shape, mode=mode, align_corners=False) * 2 - 1


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_psnr_is_inf_for_identical_images_and_exact_for_a_known_error(dim):
    x = _smooth(SHAPES[dim])
    assert torch.isinf(psnr(x, x, 2.0)).all()
    expected = 20 * math.log10(2.0) - 10 * math.log10(0.1**2)  # MSE 0.01 in a range of 2: 26.02 dB
    torch.testing.assert_close(psnr(x + 0.1, x, 2.0), torch.full((2,), expected), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_ssim_is_one_for_identical_images_and_falls_with_noise(dim):
    x = _smooth(SHAPES[dim])
    torch.testing.assert_close(ssim(x, x, 2.0), torch.ones(2))
    noisy = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    assert (ssim(noisy, x, 2.0) < 0.9).all()


def test_ssim_window_shrinks_to_thin_axes_and_refuses_too_thin_ones():
    assert window_size((20, 5, 32)) == 5 and window_size((64, 64)) == 11 and window_size((8, 8)) == 7
    with pytest.raises(ValueError, match="at least 3 voxels"):
        window_size((2, 32, 32))


def test_ms_ssim_settings_fit_small_patches_and_keep_monais_defaults_for_large_ones():
    window, weights = ms_ssim_settings((200, 200))  # MONAI's defaults: 5 scales, window 11
    assert window == 11 and weights == pytest.approx(WEIGHTS, abs=1e-4)
    window, weights = ms_ssim_settings((32, 32, 32))
    assert window == 7 and len(weights) == 3 and math.isclose(sum(weights), 1.0)
    assert ms_ssim_settings((64, 64))[0] == 7 and len(ms_ssim_settings((64, 64))[1]) == 4
    assert ms_ssim_settings((12, 12))[0] < 7  # too small for a window of 7 at 2 scales
    with pytest.raises(ValueError, match="too small for MS-SSIM"):
        ms_ssim_settings((4, 32))


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_ms_ssim_diversity_is_one_for_copies_and_low_for_independent_noise(dim):
    x = _smooth(SHAPES[dim], batch=1)
    assert mean_pairwise_ms_ssim(x.repeat(3, *(1,) * (x.ndim - 1)), 2.0) == pytest.approx(1.0, abs=1e-5)
    noise = torch.rand(4, 1, *SHAPES[dim], generator=torch.Generator().manual_seed(2)) * 2 - 1
    assert mean_pairwise_ms_ssim(noise, 2.0) < 0.2
    different = _smooth(SHAPES[dim], batch=1, seed=5)
    assert ms_ssim(x, different, 2.0).item() < 1.0 - 1e-3


def test_frechet_distance_is_zero_for_identical_sets_and_the_squared_shift_for_a_shifted_one():
    real = torch.randn(256, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(frechet_distance(real, real)) < 1e-8
    # same covariance, mean moved by 1 in each of 4 dimensions: |mu_r - mu_s|^2 = 4 and the trace term vanishes
    assert frechet_distance(real, real + 1.0) == pytest.approx(4.0, abs=1e-8)
    further = frechet_distance(real, real + 2.0)
    assert further == pytest.approx(16.0, abs=1e-8)


def test_frechet_distance_of_identical_sets_with_fewer_samples_than_features_is_zero():
    real = torch.randn(6, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(frechet_distance(real, real)) < 1e-10 * float(real.var(dim=0).sum())


@pytest.mark.parametrize("n_real, n_synthetic, features, tolerance", [(200, 150, 6, 1e-10), (8, 12, 64, 1e-7),
                                                                     (16, 16, 992, 1e-6)])
def test_frechet_distance_is_monais_fid_without_the_matrix_square_root(n_real, n_synthetic, features, tolerance):
    """The same value as MONAI's FIDMetric, with more vectors than features (a full-rank product) and with fewer, as
    the demo's 8 or 16 images in nnU-Net's 992 encoder features have. There the F x F square root also takes the roots
    of the zero eigenvalues that round-off leaves slightly positive: MONAI's value is the one off, by 1.2e-7 of it at
    F = 992."""
    from monai.metrics import FIDMetric

    generator = torch.Generator().manual_seed(features)
    mixing = torch.randn(features, features, generator=generator, dtype=torch.float64) / features**0.5
    real = torch.randn(n_real, features, generator=generator, dtype=torch.float64) @ mixing
    synthetic = 1.3 * torch.randn(n_synthetic, features, generator=generator, dtype=torch.float64) @ mixing + 0.2
    expected = float(FIDMetric()(synthetic, real))
    assert frechet_distance(real, synthetic) == pytest.approx(expected, rel=tolerance)
    assert frechet_distance(synthetic, real) == pytest.approx(expected, rel=tolerance)


def test_gaussian_mmd_is_zero_for_identical_sets_and_grows_with_the_shift():
    real = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    same_distribution = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    assert gaussian_mmd(real, real) == pytest.approx(0.0, abs=1e-12)
    near, far = gaussian_mmd(real, real + 0.5, bandwidth=3.0), gaussian_mmd(real, real + 2.0, bandwidth=3.0)
    assert 0 < near < far
    assert gaussian_mmd(real, same_distribution) < gaussian_mmd(real, real + 1.0)


def test_feature_distances_refuse_mismatched_or_too_small_sets():
    with pytest.raises(ValueError, match="same F"):
        frechet_distance(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="at least 2 vectors"):
        gaussian_mmd(torch.zeros(1, 4), torch.zeros(3, 4))


def _plans(scheme: str) -> dict:
    return {"dataset_name": "Dataset999_X", "plans_name": "nnUNetPlans", "original_median_spacing_after_transp": [1, 1],
            "configurations": {"2d": {"normalization_schemes": [scheme], "use_mask_for_norm": [False],
                                      "data_identifier": "x", "preprocessor_name": "DefaultPreprocessor",
                                      "batch_size": 2, "patch_size": [8, 8], "spacing": [1, 1],
                                      "architecture": {"network_class_name": "x", "arch_kwargs": {},
                                                       "_kw_requires_import": []}}},
            "foreground_intensity_properties_per_channel": {"0": {"mean": 100.0, "std": 50.0,
                                                                  "percentile_00_5": 0.0, "percentile_99_5": 300.0}}}


def test_images_are_normalised_with_the_plans_scheme_as_nnunet_preprocesses_them():
    image = np.random.default_rng(0).uniform(-100, 500, size=(1, 8, 8)).astype(np.float32)
    z = nnunet_normalised(image, _plans("ZScoreNormalization"), "2d")
    np.testing.assert_allclose(z, (image - image.mean()) / max(image.std(), 1e-8), rtol=1e-4, atol=1e-4)
    ct = nnunet_normalised(image, _plans("CTNormalization"), "2d")
    np.testing.assert_allclose(ct, (np.clip(image, 0, 300) - 100) / 50, rtol=1e-5, atol=1e-5)
