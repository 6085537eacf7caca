"""The references the demo's samples are scored against (nnugen/demo/reference_images.py)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from nnugen.demo.reference_images import gaussian_like, phase_scrambled, write_reference_set


@pytest.mark.parametrize("shape", [(40, 48), (7, 9, 5), (8, 6, 10)])
def test_phase_scrambling_keeps_the_power_spectrum_and_loses_the_layout(shape):
    rng = np.random.default_rng(0)
    image = np.zeros(shape)
    image[tuple(slice(s // 4, 3 * s // 4) for s in shape)] = -5.0  # a negative mean must stay negative
    image += rng.normal(0, 0.3, shape)
    scrambled = phase_scrambled(image, rng)
    assert scrambled.shape == shape and scrambled.dtype == np.float64
    np.testing.assert_allclose(np.abs(np.fft.fftn(scrambled)), np.abs(np.fft.fftn(image)), atol=1e-9)
    assert scrambled.mean() == pytest.approx(image.mean()) and scrambled.std() == pytest.approx(image.std())
    # where the block was is not where the bright part is any more
    assert abs(np.corrcoef(image.ravel(), scrambled.ravel())[0, 1]) < 0.3


def test_the_amplitude_adjusted_surrogate_has_the_exact_histogram_and_nearly_the_spectrum():
    rng = np.random.default_rng(2)
    image = np.zeros((48, 40))
    image[12:36, 8:30] = 3.0 + rng.normal(0, 0.2, (24, 22))  # a body on a black background
    surrogate = phase_scrambled(image, rng, iterations=20)
    np.testing.assert_array_equal(np.sort(surrogate, axis=None), np.sort(image, axis=None))
    assert (surrogate == 0).mean() == (image == 0).mean()  # the background keeps its share
    spectra = [np.abs(np.fft.fft2(a)).ravel() for a in (image, surrogate)]
    assert np.corrcoef(*spectra)[0, 1] > 0.95  # the same pixels shuffled: 0.45
    assert abs(np.corrcoef(image.ravel(), surrogate.ravel())[0, 1]) < 0.5


def test_gaussian_reference_has_the_images_mean_and_spread():
    rng = np.random.default_rng(1)
    image = rng.gamma(2.0, 3.0, (64, 64))
    noise = gaussian_like(image, rng)
    assert noise.mean() == pytest.approx(image.mean(), abs=0.1) and noise.std() == pytest.approx(image.std(), rel=0.03)


def test_a_reference_set_has_one_image_per_real_one_with_its_geometry(tmp_path):
    real = sitk.GetImageFromArray(np.arange(6 * 5 * 4, dtype=np.float32).reshape(6, 5, 4))
    real.SetSpacing((0.5, 2.0, 3.0))
    real.SetOrigin((1.0, 2.0, 3.0))
    sitk.WriteImage(real, str(tmp_path / "case_0000.nii.gz"))
    folder = tmp_path / "scrambled"
    (folder / "stale").mkdir(parents=True)  # emptied first
    write_reference_set("scrambled", [tmp_path / "case_0000.nii.gz"] * 3, folder, seed=0)
    written = sorted(p.name for p in folder.iterdir())
    assert written == [f"scrambled_{k:04d}_0000.nii.gz" for k in range(3)]
    image = sitk.ReadImage(str(folder / written[0]))
    assert image.GetSpacing() == real.GetSpacing() and image.GetOrigin() == real.GetOrigin()
    array = sitk.GetArrayFromImage(image)
    assert array.shape == (6, 5, 4) and array.mean() == pytest.approx(59.5, rel=1e-5)
    # the same seed gives the same set; each image of a set has its own phases
    again = tmp_path / "again"
    write_reference_set("scrambled", [tmp_path / "case_0000.nii.gz"] * 3, again, seed=0)
    second = sitk.GetArrayFromImage(sitk.ReadImage(str(again / written[0])))
    np.testing.assert_array_equal(array, second)
    assert not np.allclose(array, sitk.GetArrayFromImage(sitk.ReadImage(str(folder / written[1]))))
