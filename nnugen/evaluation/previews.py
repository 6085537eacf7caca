"""Sample previews written during generative training: a PNG of the middle slice of each generated channel (and
the label when generated), and for 3D a GIF through the slices (medimgen's training plots)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from nnugen.atomic_files import atomic_write_with


def _normalise(array: np.ndarray) -> np.ndarray:
    low, high = float(array.min()), float(array.max())
    return ((array - low) / (high - low + 1e-8) * 255).astype(np.uint8)


def preview_panels(sample: Tensor, image_channels: int) -> np.ndarray:
    """(C, *spatial) -> panels (N, *spatial): image channels, plus the label (argmax of the rest) if present."""
    array = sample.detach().float().cpu().numpy()
    panels = [array[c] for c in range(image_channels)]
    if array.shape[0] > image_channels:
        panels.append(np.argmax(array[image_channels:], axis=0).astype(np.float32))
    return np.stack(panels)


def write_preview(sample: Tensor, image_channels: int, path: Path) -> list[Path]:
    """Write ``path`` (.png, middle slice of each panel side by side) and, for 3D, ``path`` with .gif."""
    import imageio.v3 as iio

    panels = preview_panels(sample, image_channels)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = [path]
    if panels.ndim == 3:  # 2D
        strip = np.concatenate([_normalise(p) for p in panels], axis=1)
        atomic_write_with(path, lambda tmp: iio.imwrite(tmp, strip, extension=".png"), suffix=".png")
        return written
    middle = panels.shape[1] // 2
    strip = np.concatenate([_normalise(p[middle]) for p in panels], axis=1)
    atomic_write_with(path, lambda tmp: iio.imwrite(tmp, strip, extension=".png"), suffix=".png")
    frames = np.stack([np.concatenate([_normalise(p)[z] for p in panels], axis=1) for z in range(panels.shape[1])])
    gif = path.with_suffix(".gif")
    atomic_write_with(gif, lambda tmp: iio.imwrite(tmp, frames, extension=".gif", loop=0), suffix=".gif")
    return [*written, gif]
