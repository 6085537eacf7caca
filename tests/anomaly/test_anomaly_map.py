"""Residual maps, post-processing switches, small-component removal, body masks, ensembles."""

import numpy as np
import pytest
import torch

from nnugen.anomaly import body_mask, ensemble_map, postprocess, remove_small_components, residual_map, uncertainty
from nnugen.demo.phantom import PhantomSpec, make_phantom_case

SPATIAL = {"2d": (20, 24), "3d": (10, 12, 14)}


@pytest.mark.parametrize("spatial", SPATIAL.values(), ids=SPATIAL.keys())
def test_residual_map_combines_channels(spatial):
    image = torch.zeros(2, 3, *spatial)
    counterfactual = torch.zeros_like(image)
    counterfactual[:, 0] = 3.0
    counterfactual[:, 1] = -1.5
    mean, peak = residual_map(image, counterfactual), residual_map(image, counterfactual, reduce="max")
    assert mean.shape == peak.shape == (2, 1, *spatial)
    torch.testing.assert_close(mean, torch.full_like(mean, 1.5))
    torch.testing.assert_close(peak, torch.full_like(peak, 3.0))
    with pytest.raises(ValueError, match="reduce"):
        residual_map(image, counterfactual, reduce="sum")
    with pytest.raises(ValueError, match="one shape"):
        residual_map(image, counterfactual[:, :2])


@pytest.mark.parametrize("spatial", SPATIAL.values(), ids=SPATIAL.keys())
def test_postprocess_steps_switch_on_and_off(spatial):
    generator = torch.Generator().manual_seed(0)
    anomaly_map = torch.rand((1, 1, *spatial), generator=generator) * 0.1
    centre = tuple(n // 2 for n in spatial)
    anomaly_map[(0, 0, *centre)] = 5.0  # one isolated hot voxel
    torch.testing.assert_close(postprocess(anomaly_map, median_filter=0), anomaly_map, rtol=0, atol=0)
    torch.testing.assert_close(postprocess(anomaly_map, median_filter=1), anomaly_map, rtol=0, atol=0)
    filtered = postprocess(anomaly_map, median_filter=3)
    assert filtered.shape == anomaly_map.shape and filtered.dtype == anomaly_map.dtype
    assert float(filtered.max()) < 0.1  # the median removes the spike
    mask = torch.zeros_like(anomaly_map, dtype=torch.bool)
    mask[..., : spatial[-1] // 2] = True
    masked = postprocess(anomaly_map, median_filter=0, mask=mask)
    assert float(masked[~mask].abs().max()) == 0 and torch.equal(masked[mask], anomaly_map[mask])
    with pytest.raises(ValueError, match="threshold"):
        postprocess(anomaly_map, min_component_voxels=5)
    with pytest.raises(ValueError, match="median_filter"):
        postprocess(anomaly_map, median_filter=-1)


@pytest.mark.parametrize("spatial", SPATIAL.values(), ids=SPATIAL.keys())
def test_component_removal_after_thresholding(spatial):
    anomaly_map = torch.zeros((1, 1, *spatial), dtype=torch.float64)
    anomaly_map[(0, 0, *[slice(1, 4)] * len(spatial))] = 2.0  # a large lesion (9 or 27 voxels)
    anomaly_map[(0, 0, *[n - 2 for n in spatial])] = 3.0  # a lone voxel
    anomaly_map[(0, 0, *[n - 5 for n in spatial])] = 0.5  # below the threshold: kept as it is
    result = postprocess(anomaly_map, median_filter=0, min_component_voxels=5, threshold=1.0)
    assert float(result[(0, 0, *[n - 2 for n in spatial])]) == 0.0
    assert torch.equal(result > 1.0, remove_small_components(anomaly_map > 1.0, 5))
    assert float(result[(0, 0, *[n - 5 for n in spatial])]) == 0.5
    assert int((result > 1.0).sum()) == 3 ** len(spatial)


def test_remove_small_components_numpy_and_tensor_full_connectivity():
    binary = np.zeros((2, 1, 8, 8), bool)
    binary[0, 0, [1, 2, 3], [1, 2, 3]] = True  # diagonal: one component with 8-connectivity
    binary[0, 0, 6, 6] = True
    binary[1, 0, 5:8, 0] = True
    kept = remove_small_components(binary, 3)
    assert isinstance(kept, np.ndarray) and kept.dtype == bool
    assert kept[0, 0, [1, 2, 3], [1, 2, 3]].all() and not kept[0, 0, 6, 6] and kept[1, 0, 5:8, 0].all()
    as_tensor = remove_small_components(torch.from_numpy(binary), 3)
    assert isinstance(as_tensor, torch.Tensor) and np.array_equal(as_tensor.numpy(), kept)
    assert np.array_equal(remove_small_components(binary, 0), binary)
    assert not remove_small_components(binary, 4)[0].any()
    with pytest.raises(ValueError):
        remove_small_components(binary, -1)
    with pytest.raises(ValueError, match=r"\(B, C, \*spatial\)"):
        remove_small_components(binary[0, 0], 3)


@pytest.mark.parametrize("spec", [PhantomSpec(shape=(24, 32, 32), n_channels=2), PhantomSpec((48, 48), (1.0, 1.0))],
                         ids=["3d", "2d"])
def test_body_mask_of_a_phantom(spec):
    images, label = make_phantom_case(spec, np.random.default_rng(0))
    image = np.stack(images)[None]
    mask = body_mask(image)
    assert mask.shape == (1, 1, *spec.shape) and mask.dtype == bool
    assert mask[0, 0][label > 0].all()  # organ and phantom lesion lie in the body
    corners = mask[(0, 0, *[[0, -1]] * len(spec.shape))]
    assert not corners.any()
    assert 0.1 < mask.mean() < 0.8
    from_tensor = body_mask(torch.from_numpy(image))
    assert isinstance(from_tensor, torch.Tensor) and np.array_equal(from_tensor.numpy(), mask)


def test_body_mask_fills_holes_keeps_the_largest_part_and_handles_constant_images():
    image = np.zeros((1, 1, 32, 32))
    image[0, 0, 4:28, 4:28] = 100.0
    image[0, 0, 12:16, 12:16] = 0.0  # a dark hole inside the body
    image[0, 0, 30, 30] = 100.0  # a bright speck outside
    mask = body_mask(image, smoothing=0)
    assert mask[0, 0, 4:28, 4:28].all() and mask.sum() == 24 * 24
    assert body_mask(np.full((1, 2, 8, 8), 3.0)).all()
    with pytest.raises(ValueError):
        body_mask(image, threshold_fraction=1.5)


def test_ensemble_mean_and_uncertainty_std():
    maps = [torch.full((1, 1, 4, 4), v) for v in (1.0, 2.0, 3.0)]
    torch.testing.assert_close(ensemble_map(maps), torch.full((1, 1, 4, 4), 2.0))
    torch.testing.assert_close(uncertainty(torch.stack(maps)), torch.full((1, 1, 4, 4), float(np.std([1, 2, 3]))))
    torch.testing.assert_close(uncertainty(maps[:1]), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError):
        ensemble_map([])


def test_seed_averaged_residuals_average_the_counterfactuals_per_strength():
    from nnugen.anomaly import seed_averaged_residuals

    image = torch.zeros(1, 2, 4, 4)
    # 2 seeds x 2 strengths, seed-major: noise of opposite sign per seed, and a lesion-like offset every seed shares
    noise = torch.randn(1, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    counterfactuals = torch.stack([noise + 1, noise * 2, -noise + 1, -noise * 2])
    maps = seed_averaged_residuals(image, counterfactuals, seeds=2)
    assert maps.shape == (2, 1, 1, 4, 4)
    torch.testing.assert_close(maps[0], torch.ones(1, 1, 4, 4))  # the shared offset survives in full
    torch.testing.assert_close(maps[1], torch.zeros(1, 1, 4, 4))  # the seeds' noise cancels
    # the mean of per-seed residuals keeps the noise
    per_seed = torch.stack([residual_map(image, c) for c in counterfactuals])
    assert float(ensemble_map(per_seed[1::2]).mean()) > 0.5
    # one seed: the residuals themselves
    torch.testing.assert_close(seed_averaged_residuals(image, counterfactuals[:2], seeds=1), per_seed[:2])
    with pytest.raises(ValueError, match="dividing"):
        seed_averaged_residuals(image, counterfactuals, seeds=3)


def test_erode_mask_shrinks_by_face_steps_and_not_at_the_array_border():
    from nnugen.anomaly import erode_mask

    square = np.zeros((1, 1, 12, 12), bool)
    square[0, 0, 2:10, 3:11] = True
    eroded = erode_mask(square, 2)
    expected = np.zeros_like(square)
    expected[0, 0, 4:8, 5:9] = True
    assert np.array_equal(eroded, expected)
    # face connectivity: one step takes a diamond's corners off, not a square's (a 3 x 3 structure would)
    plus = np.zeros((1, 1, 5, 5), bool)
    plus[0, 0, 1:4, 1:4] = True
    assert erode_mask(plus, 1)[0, 0].sum() == 1
    # a mask that runs off the array (a tile cutting the body) is eroded only where it ends inside
    half = torch.zeros(2, 1, 6, 6, 6, dtype=torch.bool)
    half[:, :, :, :, :3] = True
    eroded = erode_mask(half, 1)
    assert isinstance(eroded, torch.Tensor) and eroded.dtype == torch.bool
    assert torch.equal(eroded[:, :, :, :, :2], half[:, :, :, :, :2]) and not eroded[:, :, :, :, 2:].any()
    assert erode_mask(square, 0) is square


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_erode_mask_refuses_what_is_not_a_count(bad):
    from nnugen.anomaly import erode_mask

    with pytest.raises(ValueError, match="voxels must be an integer >= 0"):
        erode_mask(np.ones((1, 1, 4, 4), bool), bad)


def test_the_map_region_is_the_eroded_body_and_anatomy():
    from nnugen.anomaly import MapPostprocessing, body_mask, erode_mask

    image = torch.full((1, 1, 16, 16), -1.0)
    image[:, :, 2:14, 2:14] = 1.0  # a bright body on a dark background
    anatomy = torch.zeros(1, 1, 16, 16, dtype=torch.bool)
    anatomy[:, :, 3:13, :10] = True
    expected = torch.zeros_like(anatomy)
    expected[:, :, 5:11, 0:8] = True  # the anatomy shrunk by 2, except where it runs off the array
    assert torch.equal(MapPostprocessing(mask_to_body=False, erode_region=2).region(image, anatomy), expected)
    both = body_mask(image) & anatomy
    assert torch.equal(MapPostprocessing(erode_region=0).region(image, anatomy), both)
    assert torch.equal(MapPostprocessing(erode_region=1).region(image, anatomy), erode_mask(both, 1))
    assert MapPostprocessing(mask_to_body=False, erode_region=3).region(image, None) is None


def _noisy_case() -> torch.Tensor:
    """A (1, 1, 13, 10) case in model units: a bright body on a dark, noisy background, like an MR slice."""
    generator = torch.Generator().manual_seed(5)
    image = -0.8 + 0.05 * torch.rand(1, 1, 13, 10, generator=generator)
    image[..., 3:10, 2:8] = 0.6 + 0.1 * torch.rand(7, 6, generator=generator)
    return image


def test_the_unpadded_box_leaves_out_the_planes_that_are_exactly_the_padding_value():
    from nnugen.anomaly import unpadded_box

    case = torch.rand(2, 5, 7) + 0.5
    case[1, :, 0] = 0.0  # one channel zero in a plane: not padding
    padded = torch.nn.functional.pad(case, (3, 1, 2, 2))  # nnU-Net pads each axis on both sides
    assert unpadded_box(padded) == (slice(2, 7), slice(3, 10))
    assert torch.equal(padded[(slice(None), *unpadded_box(padded))], case)
    assert unpadded_box(padded.numpy()) == (slice(2, 7), slice(3, 10))
    assert unpadded_box(case) == (slice(0, 5), slice(0, 7))
    assert unpadded_box(torch.zeros(1, 4, 6)) == (slice(0, 4), slice(0, 6))  # nothing to tell apart
    assert unpadded_box(torch.full((1, 4, 6), 2.0), value=2.0) == (slice(0, 4), slice(0, 6))


def test_the_region_of_a_padded_tile_is_the_region_of_the_case_without_its_padding():
    from nnugen.anomaly import MapPostprocessing

    case = _noisy_case()
    anatomy = torch.zeros_like(case, dtype=torch.bool)
    anatomy[..., :, :6] = True
    pad = (3, 3, 4, 3)  # to 20 x 16, as nnU-Net pads a case smaller than the patch
    padding_value = 0.1  # the preprocessed 0 in model units: brighter than the background
    tile = torch.nn.functional.pad(case, pad, value=padding_value)
    tile_anatomy = torch.nn.functional.pad(anatomy, pad)
    box = [(slice(4, 17), slice(3, 13))]
    for erosion in (0, 2):
        post = MapPostprocessing(erode_region=erosion)
        for kept_anatomy in (None, anatomy):
            on_tile = post.region(tile, None if kept_anatomy is None else tile_anatomy, box)
            expected = torch.nn.functional.pad(post.region(case, kept_anatomy), pad)
            assert torch.equal(on_tile, expected), (erosion, kept_anatomy is None)
        assert 0 < int(post.region(case, None).sum()) < case.numel()  # the body, not the whole case
    # without the box the padding frame is taken for tissue: the region is the whole tile and nothing is masked
    assert bool(MapPostprocessing(erode_region=2).region(tile, None).all())
    with pytest.raises(ValueError, match="one box per sample"):
        MapPostprocessing().region(tile, None, box * 2)
    assert MapPostprocessing(mask_to_body=False).region(tile, None, box) is None
