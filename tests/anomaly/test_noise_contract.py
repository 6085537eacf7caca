"""What every smooth partial-noising noise promises (simplex, filtered), 1D to 3D: q_sample's zero mean and unit
variance per (sample, channel), the same field for the same generator state, other fields for other seeds, samples
and channels."""

import pytest
import torch

from nnugen.anomaly import filtered_noise, simplex_noise

NOISES = {"simplex": simplex_noise, "filtered": filtered_noise}
SHAPES = {"1d": (3, 2, 40), "2d": (2, 2, 32, 32), "3d": (1, 2, 12, 12, 12)}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("noise", NOISES.values(), ids=NOISES.keys())
def test_zero_mean_unit_variance_per_sample_and_channel(noise, shape):
    field = noise(shape, torch.Generator().manual_seed(0))
    assert field.shape == shape and field.dtype == torch.float32 and torch.isfinite(field).all()
    spatial = tuple(range(2, len(shape)))
    torch.testing.assert_close(field.mean(dim=spatial), torch.zeros(shape[:2]), atol=1e-5, rtol=0)
    torch.testing.assert_close(field.std(dim=spatial, unbiased=False), torch.ones(shape[:2]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@pytest.mark.parametrize("noise", NOISES.values(), ids=NOISES.keys())
def test_seeded_reproducible_and_different_seeds_differ(noise, shape):
    first = noise(shape, torch.Generator().manual_seed(3))
    torch.testing.assert_close(noise(shape, torch.Generator().manual_seed(3)), first, rtol=0, atol=0)
    other = noise(shape, torch.Generator().manual_seed(4))
    assert (first - other).abs().mean() > 0.5  # independent unit-variance fields: mean |a - b| is about 1.1
    assert (first[:, 0] - first[:, 1]).abs().mean() > 0.5  # channels (and samples) get their own fields
