"""Random draws from an explicit torch.Generator (None: the global RNG), on the generator's device then moved.

Drawing on the generator's own device makes a CPU generator usable with CUDA tensors and keeps results equal
to a plain `torch.randn(shape, generator=g)` when devices match. Create the generator on the tensors' device
(`torch.Generator(device=x.device)`) to draw there: a CPU generator with CUDA tensors costs a host-to-device copy
per draw. CUDA and CPU generators give different streams for one seed, so a seed reproduces results on the same
device type only.

Several independent streams in one batch (the members of an ensemble sampled as one batch): pass a sequence of n
generators as ``generator`` to ``randn_like``; the batch axis is cut into n equal chunks and chunk j is drawn from
generator j, exactly as ``randn_like`` of the chunk alone with that generator draws it. A sampler that passes its
``generator`` on to ``randn_like`` therefore runs n seeded streams at once without knowing it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from nnugen.diffusion.positional_noise import PositionalNoise

Generators = torch.Generator | Sequence[torch.Generator] | PositionalNoise | None
"""One generator, one per equal chunk of the batch axis (``randn_like``), a ``PositionalNoise`` (noise per voxel
position, the same however the volume is cut), or None for the global RNG."""


def _device(generator: torch.Generator | None, fallback: torch.device | str | None) -> torch.device | str | None:
    return generator.device if generator is not None else fallback


def randn_like(like: Tensor, generator: Generators = None) -> Tensor:
    """Standard normal noise with `like`'s shape, dtype and device. A sequence of n generators draws chunk j of the
    batch axis (``like.shape[0] / n`` rows) from generator j (see the module docstring); a ``PositionalNoise``
    draws its region of the volume at its next draw index."""
    if isinstance(generator, PositionalNoise):
        return generator.randn_like(like)
    if generator is not None and not isinstance(generator, torch.Generator):
        generators = list(generator)
        if not generators or like.shape[0] % len(generators):
            raise ValueError(f"{len(generators)} generators cannot split a batch of {like.shape[0]} into equal "
                             "chunks; pass one generator per equal chunk of the batch (e.g. one per ensemble member)")
        chunks = like.split(like.shape[0] // len(generators))
        return torch.cat([randn_like(chunk, g) for chunk, g in zip(chunks, generators)])
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
