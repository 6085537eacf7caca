"""Counter-based Gaussian noise: the value at a voxel depends only on (seed, draw index, global position), never on
which region of the volume is drawn, so a volume split across processes gets the noise of the whole volume.

Each value is one block of Philox-4x32-10 (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3"; the
generator behind cuRAND's and torch's CUDA streams), written with int64 torch operations so that it runs on any
device, vectorised. Philox is a keyed bijection of a 128-bit counter; nnugen's counter for a value is

    (linear index low 32 bits, linear index high 32 bits, draw index, batch index)

with the linear index of (channel, *position) in the (C, *volume) of the whole volume, and the key is the seed's
64 bits. The four 32-bit outputs become one standard normal value by Box-Muller (Box & Muller 1958):
u1 = 52 bits of words 0-1 (in (0, 1), never 0), u2 = word 2 / 2^32, z = sqrt(-2 ln u1) cos(2 pi u2), in float64,
then cast to the dtype asked for. Tails reach about 8.5 sigma.

``PositionalNoise`` is the generator-like source the samplers take (``noise.randn_like`` hands it the draws): draw k
of a run (k = 0 the initial noise, then each stochastic sampler step) uses draw index k, so every process of a
partitioned run, drawing its own region in the same order, gets the same values as one process drawing the whole
volume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

MASK32 = 0xFFFFFFFF
PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57  # Salmon et al. 2011, Table 2: the 4x32 multipliers
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85  # the Weyl key increments (golden ratio, sqrt(3) - 1)
PHILOX_ROUNDS = 10
CHUNK = 1 << 21  # values per vectorised pass: bounds the int64 temporaries (about 16 MB each)


def _mulhilo(multiplier: int, x: Tensor) -> tuple[Tensor, Tensor]:
    """(high, low) 32-bit halves of multiplier * x for x in [0, 2^32) held in int64. The 64-bit product wraps in
    int64 (two's complement), and its bits 32-63 survive the arithmetic right shift once masked."""
    product = x * multiplier
    return (product >> 32) & MASK32, product & MASK32


def philox4x32(counter: Sequence[Tensor], key: tuple[int, int], rounds: int = PHILOX_ROUNDS) -> list[Tensor]:
    """Philox-4x32-R (Salmon et al. 2011): four int64 tensors of 32-bit counter words (broadcastable) and a key of
    two 32-bit words -> four int64 tensors of 32-bit output words. Matches Random123's known-answer vectors."""
    c0, c1, c2, c3 = (torch.as_tensor(c) & MASK32 for c in counter)
    k0, k1 = key[0] & MASK32, key[1] & MASK32
    for round_index in range(rounds):
        if round_index:
            k0, k1 = (k0 + PHILOX_W0) & MASK32, (k1 + PHILOX_W1) & MASK32
        hi0, lo0 = _mulhilo(PHILOX_M0, c0)
        hi1, lo1 = _mulhilo(PHILOX_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return [c0, c1, c2, c3]


def _normal_from_words(words: list[Tensor]) -> Tensor:
    """Box-Muller on 52 + 32 random bits -> float64 standard normal values."""
    bits52 = (words[0] << 20) | (words[1] >> 12)
    u1 = (2 * bits52 + 1).double() * 2.0**-53  # (0, 1): 2 * bits52 + 1 < 2^53 is exact in float64
    u2 = words[2].double() * 2.0**-32
    return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2.0 * math.pi) * u2)


def positional_normal(seed: int, draw: int, volume: Sequence[int], origin: Sequence[int], shape: Sequence[int],
                      channels: int = 1, batch: int = 1, device: torch.device | str = "cpu",
                      dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normal values (batch, channels, *shape) of the region starting at ``origin`` of a ``volume``
    (spatial sizes), for draw index ``draw`` of the run seeded ``seed``; equal, value for value, to the same region
    cut from the draw of the whole volume. ValueError when the region leaves the volume."""
    volume, origin, shape = tuple(map(int, volume)), tuple(map(int, origin)), tuple(map(int, shape))
    if not len(volume) == len(origin) == len(shape):
        raise ValueError(f"region origin {origin} and shape {shape} must have the volume's {len(volume)} axes")
    if any(o < 0 or o + s > v for o, s, v in zip(origin, shape, volume)) or min(shape, default=1) < 1:
        raise ValueError(f"the region at {origin} of shape {shape} does not lie inside the volume {volume}")
    if draw < 0:
        raise ValueError(f"draw index {draw} must be >= 0")
    key = (seed & MASK32, (seed >> 32) & MASK32)  # any Python int: its 64 low bits (two's complement)
    # the linear index of (channel, *position) in the whole (C, *volume), built by broadcasting one axis at a time
    index = torch.arange(channels, device=device, dtype=torch.int64).view(channels, *(1,) * len(shape))
    for axis, (o, s, v) in enumerate(zip(origin, shape, volume)):
        view = [1] * (len(shape) + 1)
        view[axis + 1] = s
        index = index * v + torch.arange(o, o + s, device=device, dtype=torch.int64).view(view)
    index = index.reshape(-1)
    out = torch.empty((batch, index.numel()), device=device, dtype=dtype)
    for b in range(batch):
        for start in range(0, index.numel(), CHUNK):
            part = index[start:start + CHUNK]
            words = philox4x32((part & MASK32, part >> 32, torch.full_like(part, draw), torch.full_like(part, b)),
                               key)
            out[b, start:start + CHUNK] = _normal_from_words(words).to(dtype)
    return out.view(batch, channels, *shape)


@dataclass
class PositionalNoise:
    """A generator-like source of noise for one region of a volume: ``randn_like(x)`` with x (B, C, *region shape)
    returns ``positional_normal`` at the next draw index. Pass it wherever a sampler takes ``generator``; ranks that
    hold different regions of one volume and draw in the same order draw the whole volume's noise between them.

    Example::

        >>> whole = PositionalNoise(seed=7, volume=(32, 40))
        >>> left = PositionalNoise(seed=7, volume=(32, 40), origin=(0, 8))
        >>> bool((whole.randn_like(torch.empty(1, 2, 32, 40))[..., 8:24] ==
        ...       left.randn_like(torch.empty(1, 2, 32, 16))).all())
        True
    """

    seed: int
    volume: tuple[int, ...]
    origin: tuple[int, ...] | None = None
    """Where this source's region starts in the volume (default: the volume's corner)."""
    draws: int = field(default=0)
    """Draws made so far: the draw index of the next one."""

    def randn_like(self, like: Tensor) -> Tensor:
        """Noise with ``like``'s shape, dtype and device: its region of the volume, at the next draw index."""
        shape = tuple(like.shape[2:])
        origin = self.origin if self.origin is not None else (0,) * len(shape)
        noise = positional_normal(self.seed, self.draws, self.volume, origin, shape, like.shape[1], like.shape[0],
                                  like.device, like.dtype)
        self.draws += 1
        return noise
