import pytest
import torch

from nnugen.networks import SpatialSelfAttention


@pytest.mark.parametrize("spatial", [(4, 6), (2, 3, 4)], ids=["2d", "3d"])
def test_starts_as_identity_and_learns(spatial):
    torch.manual_seed(0)
    attention = SpatialSelfAttention(8, heads=2)
    x = torch.randn(2, 8, *spatial)
    torch.testing.assert_close(attention(x), x)
    attention(x).square().sum().backward()
    assert attention.proj.weight.grad.abs().sum() > 0
    torch.nn.init.normal_(attention.proj.weight)
    assert not torch.allclose(attention(x), x)


def test_attention_mixes_positions():
    torch.manual_seed(0)
    attention = SpatialSelfAttention(4)
    torch.nn.init.normal_(attention.proj.weight)
    x = torch.randn(1, 4, 3, 3)
    y = x.clone()
    y[..., 0, 0] += 1.0
    assert not torch.allclose((attention(y) - y)[..., 2, 2], (attention(x) - x)[..., 2, 2])


def test_heads_must_divide_channels():
    with pytest.raises(ValueError, match="heads"):
        SpatialSelfAttention(6, heads=4)
