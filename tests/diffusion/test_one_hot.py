"""``one_hot``, the one label-map -> one-hot conversion: bit-identical to the helpers it replaced (the segmentation
target, the generative trainers' clamped one-hot in [-1, 1] and the anatomy condition), in 2D and 3D."""

import pytest
import torch

from nnugen.anomaly import anatomy_condition
from nnugen.diffusion import one_hot

SHAPES = {"2d": (2, 1, 6, 5), "3d": (2, 1, 4, 3, 5)}


def _labels(shape: tuple[int, ...], high: int = 3) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("dim", SHAPES)
def test_matches_the_segmentation_target_it_replaced(dim):
    labels = _labels(SHAPES[dim]).to(torch.int16)  # nnU-Net's loader gives int16 or float labels
    expected = torch.nn.functional.one_hot(labels[:, 0].long(), 3).movedim(-1, 1).float()
    result = one_hot(labels, 3)
    assert result.dtype == torch.float32 and result.shape == (2, 3, *SHAPES[dim][2:])
    assert torch.equal(result, expected) and result.stride() == expected.stride()
    assert torch.equal(one_hot(labels.float(), 3), expected)


@pytest.mark.parametrize("dim", SHAPES)
def test_diffusion_space_with_clamp_matches_the_generative_one_hot_it_replaced(dim):
    labels = _labels(SHAPES[dim], high=5) - 1  # -1 .. 3: out of range on both sides for 3 classes
    expected = torch.nn.functional.one_hot(labels[:, 0].long().clamp(0, 2), 3).movedim(-1, 1).float() * 2 - 1
    result = one_hot(labels, 3, diffusion_space=True, clamp=True)
    assert torch.equal(result, expected) and result.stride() == expected.stride()
    assert torch.equal(result.sum(1), torch.full_like(result[:, 0], -1.0))  # one +1 and two -1 per voxel
    with pytest.raises(RuntimeError):
        one_hot(labels, 3)  # without clamp an index out of range is an error, as torch's one_hot makes it


@pytest.mark.parametrize("dim", SHAPES)
def test_the_anatomy_condition_is_the_masks_one_hot_in_diffusion_space(dim):
    mask = _labels(SHAPES[dim], high=2).bool()
    expected = torch.cat([~mask, mask], dim=1).float() * 2 - 1
    condition = anatomy_condition(mask)
    assert torch.equal(condition, expected) and condition.is_contiguous()
    assert torch.equal(one_hot(mask, 2, diffusion_space=True), expected)
