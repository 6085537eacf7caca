"""Previews written during training, side by side as one strip: a PNG (2D, or the middle slice in 3D) and in 3D a GIF
through the slices (medimgen's training plots). A generated sample: each image channel and the label when generated;
the trainers compose others (the autoencoder: input | reconstruction; the anomaly model: input | counterfactual |
anomaly map; diffusion segmentation: image | reference | prediction | entropy)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from nnugen.atomic_files import atomic_write_with


def _normalise(array: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """uint8 grey levels: ``value_range`` (low, high) -> 0 .. 255, or the array's own min .. max when None."""
    low, high = value_range if value_range is not None else (float(array.min()), float(array.max()))
    return (np.clip((array - low) / (high - low + 1e-8), 0.0, 1.0) * 255).astype(np.uint8)


def preview_panels(sample: Tensor, image_channels: int) -> np.ndarray:
    """(C, *spatial) -> panels (N, *spatial): image channels, plus the label (argmax of the rest) if present."""
    array = sample.detach().float().cpu().numpy()
    panels = [array[c] for c in range(image_channels)]
    if array.shape[0] > image_channels:
        panels.append(np.argmax(array[image_channels:], axis=0).astype(np.float32))
    return np.stack(panels)


def write_preview(sample: Tensor, image_channels: int, path: Path) -> list[Path]:
    """A generated sample's panels (``preview_panels``) written by ``write_panels``."""
    return write_panels(preview_panels(sample, image_channels), path)


def write_panels(panels: np.ndarray, path: Path,
                 ranges: Sequence[tuple[float, float] | None] | None = None) -> list[Path]:
    """Write panels (N, *spatial) side by side: ``path`` (.png; in 3D the middle slice) and, for 3D, ``path`` with
    .gif through the slices; returns the files. ``ranges``: per panel the values shown black and white (e.g. (0, K-1)
    for label maps, so reference and prediction share grey levels), None for the panel's own min .. max."""
    import imageio.v3 as iio

    panels = np.asarray(panels, dtype=np.float32)
    ranges = list(ranges) if ranges is not None else [None] * len(panels)
    if len(ranges) != len(panels):
        raise ValueError(f"{len(ranges)} ranges for {len(panels)} preview panels; give one per panel (or None)")
    grey = [_normalise(panel, value_range) for panel, value_range in zip(panels, ranges)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if panels.ndim == 3:  # 2D
        strip = np.concatenate(grey, axis=1)
        atomic_write_with(path, lambda tmp: iio.imwrite(tmp, strip, extension=".png"), suffix=".png")
        return [path]
    middle = panels.shape[1] // 2
    strip = np.concatenate([g[middle] for g in grey], axis=1)
    atomic_write_with(path, lambda tmp: iio.imwrite(tmp, strip, extension=".png"), suffix=".png")
    frames = np.stack([np.concatenate([g[z] for g in grey], axis=1) for z in range(panels.shape[1])])
    gif = path.with_suffix(".gif")
    atomic_write_with(gif, lambda tmp: iio.imwrite(tmp, frames, extension=".gif", loop=0), suffix=".gif")
    return [path, gif]
