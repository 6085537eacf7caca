"""The VQ codebook distances are float32 under mixed precision, as the docstring says: under fp16 / bf16 autocast
the nearest code is the float32 one, also where half precision would pick another."""

from __future__ import annotations

import pytest
import torch

from nnugen.networks.vector_quantizer import VectorQuantizer


def _close_codes() -> tuple[VectorQuantizer, torch.Tensor]:
    """Two codes 0.004 apart at |e| = 10 and a latent 0.001 from the first. fp16 (11 bits) and bf16 (8 bits) round
    10.003, 9.999 and 10.004 alike to 10, so a half-precision z @ e.T ties the cross terms and |e|^2 (float32) then
    favours the second, smaller code; float32 picks the first."""
    quantizer = VectorQuantizer(2, 2)
    with torch.no_grad():
        quantizer.codebook.copy_(torch.tensor([[10.003, 0.0], [9.999, 0.0]]))
    return quantizer, torch.tensor([10.004, 0.0]).view(1, 2, 1, 1)


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16))
def test_nearest_code_under_autocast_is_the_float32_one(dtype: torch.dtype) -> None:
    quantizer, z = _close_codes()
    reference = quantizer(z).indices
    assert reference.flatten().tolist() == [0]
    with torch.autocast("cpu", dtype=dtype):
        result = quantizer(z)
    assert torch.equal(result.indices, reference)
    assert result.quantized.dtype == torch.float32


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16))
def test_random_latents_quantise_alike_under_autocast(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    quantizer = VectorQuantizer(64, 4)
    with torch.no_grad():
        quantizer.codebook.copy_(torch.randn(64, 4, generator=generator))
    z = torch.randn(2, 4, 8, 8, generator=generator) * 3
    reference = quantizer(z).indices
    with torch.autocast("cpu", dtype=dtype):
        assert torch.equal(quantizer(z).indices, reference)
