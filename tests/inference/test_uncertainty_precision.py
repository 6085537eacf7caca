"""The uncertainty maps are float32 whatever precision the members' probabilities come in, also under autocast."""

from __future__ import annotations

import pytest
import torch

from nnugen.inference.uncertainty import add_member, predictive_entropy, uncertainty_maps


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16))
def test_maps_are_float32_under_autocast(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    members = torch.softmax(torch.randn(3, 4, 6, 6, generator=generator) * 4, dim=1)
    reference = None
    for member in members:
        reference = add_member(reference, member)
    moments = None
    with torch.autocast("cpu", dtype=dtype):
        for member in members:
            moments = add_member(moments, member.to(dtype))
        maps = uncertainty_maps(moments)
    assert maps.dtype == torch.float32 and moments.mean.dtype == torch.float32
    # the members were rounded to half precision (relative 2^-8 for bf16): entropy moves by at most ~u log C
    torch.testing.assert_close(maps, uncertainty_maps(reference), rtol=0, atol=2e-2)
    assert predictive_entropy(members[0].to(dtype)).dtype == torch.float32
