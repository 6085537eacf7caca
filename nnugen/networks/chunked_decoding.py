"""Decode a large latent tile by tile, with overlap, so that decoder memory no longer grows with the volume.

The split decoding (``decoding_diviser``) that the counterfactual-synthesis fork of Medical Diffusion (Khader et al.
2023) added to its VQ-GAN, made exact: the latent is cut into
``chunks`` core tiles per axis; each is decoded together with ``overlap`` extra latent voxels on every side (fewer at
the border of the volume), and only the decoded core is kept. The autoencoder's decoder is local (convolutions,
per-voxel normalisation, nearest upsampling; see ``AutoencoderDecoder``): an output voxel depends only on latent
voxels within ``latent_margin`` of it. With ``overlap >= latent_margin`` every kept voxel therefore sees exactly the
input it sees in a whole decode, and the stitched result equals ``autoencoder.decode(z)`` up to float rounding; with
less overlap, seams appear at the tile borders.

Memory: run it under ``torch.no_grad()`` / ``torch.inference_mode()`` (with gradients on, autograd keeps every tile's
activations alive). Then the decoder's activations, which dominate (``features_per_stage[0]`` channels at full
resolution, several tensors at once), exist for one tile at a time: peak memory is the output tensor plus about
``prod(tile + 2 * overlap) / prod(latent)`` of a whole decode's activations. Raising ``chunks`` with the volume keeps
that flat; pass ``out_device="cpu"`` to keep the output itself off the GPU.

Cost: the halos are decoded again by every tile that needs them. The margin of the default decoder is about
``2 * n_res_blocks + 3`` latent voxels at the latent resolution plus 2-3 from the finer stages (8 for three stages),
so keep each tile's core several times the margin: split the longest axes into a few chunks, not into many thin
slabs. Measured on 2 CPU cores (features (8, 16, 16), strides 1-2-2, float32, peak RSS): a whole decode of a 32^3 /
48^3 latent (128^3 / 192^3 output) took 650 / 1987 MiB; chunks (2, 2, 2) / (3, 3, 3) (cores of 16 latent voxels) took
388 / 753 MiB, at about 3.5x / 5x the time.
"""

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor

from nnugen.networks.autoencoder import Autoencoder


def decode_chunked(
    autoencoder: Autoencoder,
    z: Tensor,
    chunks: int | Sequence[int],
    overlap: int | Sequence[int] | None = None,
    out_device: torch.device | str | None = None,
) -> Tensor:
    """``autoencoder.decode(z)`` computed on overlapping latent tiles.

    Args:
        autoencoder: anything with ``decode``, ``downsampling`` and ``latent_margin`` (an :class:`Autoencoder`).
        z: latent ``(B, C_z, *L)``.
        chunks: an int ``n`` splits the longest latent axis (the first of equal ones) into ``n`` tiles; a tuple gives
            the number of tiles per spatial axis, e.g. ``(2, 1, 3)``. Counts above an axis' size are lowered to it.
        overlap: latent voxels added on each side of a tile, an int or one per axis; default (None) the decoder's
            ``latent_margin``, the least overlap that makes the result exact.
        out_device: device of the returned tensor; default the device of the decoded tiles.

    Returns:
        ``(B, C, *L * downsampling)``, equal to ``autoencoder.decode(z)`` when ``overlap >= latent_margin``.
    """
    spatial = tuple(z.shape[2:])
    dim = len(spatial)
    counts = _chunk_counts(chunks, spatial)
    margin = autoencoder.latent_margin if overlap is None else _per_axis(overlap, dim, "overlap")
    if any(m < 0 for m in margin):
        raise ValueError(f"overlap must be >= 0 latent voxels, got {margin}")
    if all(c == 1 for c in counts):
        out = autoencoder.decode(z)
        return out if out_device is None else out.to(out_device)
    scale = autoencoder.downsampling
    bounds = [[(i * n // c, (i + 1) * n // c) for i in range(c)] for n, c in zip(spatial, counts)]
    out: Tensor | None = None
    for tile in itertools.product(*bounds):
        piece = decode_box(autoencoder, z, tile, margin)
        if out is None:
            shape = (*piece.shape[:2], *(n * f for n, f in zip(spatial, scale)))
            out = piece.new_empty(shape, device=out_device if out_device is not None else piece.device)
        target = tuple(slice(lo * f, hi * f) for (lo, hi), f in zip(tile, scale))
        out[(..., *target)] = piece.to(out.device)
    assert out is not None  # at least one tile
    return out


def decode_box(autoencoder: Autoencoder, z: Tensor, box: Sequence[tuple[int, int]],
               margin: Sequence[int] | None = None) -> Tensor:
    """The decoded image of the latent voxels ``lo <= index < hi`` (one ``(lo, hi)`` per spatial axis of ``z``):
    the box decoded with ``margin`` more latent voxels on every side (fewer at the border; default the decoder's
    ``latent_margin``, which makes it exact), and cut back to the box's image, ``(hi - lo) * downsampling`` voxels
    per axis."""
    spatial = tuple(z.shape[2:])
    margin = autoencoder.latent_margin if margin is None else margin
    grown = [(max(0, lo - m), min(n, hi + m)) for (lo, hi), m, n in zip(box, margin, spatial)]
    piece = autoencoder.decode(z[(..., *(slice(lo, hi) for lo, hi in grown))])
    keep = tuple(slice((lo - g) * f, (hi - g) * f)
                 for (lo, hi), (g, _), f in zip(box, grown, autoencoder.downsampling))
    return piece[(..., *keep)]


def _chunk_counts(chunks: int | Sequence[int], spatial: tuple[int, ...]) -> tuple[int, ...]:
    """Tiles per axis: an int goes to the longest axis; every count is capped at the axis size."""
    if isinstance(chunks, int):
        if chunks < 1:
            raise ValueError(f"chunks must be >= 1, got {chunks}")
        longest = max(range(len(spatial)), key=lambda a: spatial[a])  # first of the longest
        counts = tuple(chunks if a == longest else 1 for a in range(len(spatial)))
    else:
        counts = _per_axis(chunks, len(spatial), "chunks")
        if any(c < 1 for c in counts):
            raise ValueError(f"chunks must be >= 1 per axis, got {counts}")
    return tuple(min(c, n) for c, n in zip(counts, spatial))


def _per_axis(value: int | Sequence[int], dim: int, name: str) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dim
    values = tuple(int(v) for v in value)
    if len(values) != dim:
        raise ValueError(f"{name} needs one entry per spatial axis ({dim}), got {values}")
    return values
