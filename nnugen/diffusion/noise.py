"""Random draws from an explicit torch.Generator (None: the global RNG), on the generator's device then moved.

Drawing on the generator's own device makes a CPU generator usable with CUDA tensors and keeps results equal
to a plain `torch.randn(shape, generator=g)` when devices match. Create the generator on the tensors' device
(`torch.Generator(device=x.device)`) to draw there: a CPU generator with CUDA tensors costs a host-to-device copy
per draw. CUDA and CPU generators give different streams for one seed, so a seed reproduces results on the same
device type only.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _device(generator: torch.Generator | None, fallback: torch.device | str | None) -> torch.device | str | None:
    return generator.device if generator is not None else fallback


def randn_like(like: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard normal noise with `like`'s shape, dtype and device."""
    noise = torch.randn(like.shape, generator=generator, device=_device(generator, like.device), dtype=like.dtype)
    return noise.to(like.device)


def rand(size: int, generator: torch.Generator | None = None, device: torch.device | str | None = None) -> Tensor:
    """Uniform [0, 1) float32 values (size,)."""
    return torch.rand((size,), generator=generator, device=_device(generator, device)).to(device)


def randint(
    high: int, size: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> Tensor:
    """Uniform integers in [0, high) as a LongTensor (size,)."""
    return torch.randint(0, high, (size,), generator=generator, device=_device(generator, device)).to(device)
