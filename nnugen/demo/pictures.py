"""The demo's pictures: grids of 2D panels (an image, a label map, a score map) with a caption each, one PNG per part
(segmentation, generation, anomaly), written atomically with matplotlib's Agg backend (no display needed).

A 3D array is shown by one slice along its first axis: ``busiest_slice`` picks the slice where a mask (the reference
foreground, the lesions) covers most voxels, so the picture shows what the part is about.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnugen.atomic_files import atomic_write_with

KINDS = ("image", "label", "map", "errors")


@dataclass(frozen=True)
class Panel:
    """One 2D panel: ``kind`` image (grey, its own range), label (a colour per class, ``classes`` of them), map (a
    score, hot colours, its own range) or errors (a wrong voxel white on black)."""

    array: np.ndarray
    caption: str
    kind: str = "image"
    classes: int = 3

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"panel kind {self.kind!r}: choose one of {', '.join(KINDS)}")
        if np.asarray(self.array).ndim != 2:
            raise ValueError(f"panel {self.caption!r} has shape {np.shape(self.array)}; give a 2D slice")


def busiest_slice(mask: np.ndarray) -> int:
    """The index along the first axis of a 3D ``mask`` where it covers most voxels (the middle one if it is empty)."""
    counts = np.asarray(mask).reshape(mask.shape[0], -1).sum(axis=1)
    return int(np.argmax(counts)) if counts.any() else mask.shape[0] // 2


def as_slice(array: np.ndarray, index: int | None) -> np.ndarray:
    """``array`` itself in 2D, its slice ``index`` along the first axis in 3D (leading singleton axes dropped)."""
    array = np.asarray(array)
    while array.ndim > 2 and array.shape[0] == 1:
        array = array[0]
    return array if array.ndim == 2 else array[index if index is not None else array.shape[0] // 2]


def write_picture(rows: list[list[Panel]], path: Path, title: str) -> Path:
    """``rows`` of panels as one PNG grid at ``path`` (captions above the panels, ``title`` above all); returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(row) for row in rows)
    figure, axes = plt.subplots(len(rows), columns, figsize=(2.0 * columns, 2.15 * len(rows) + 0.4), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(columns):
            axis = axes[r][c]
            axis.set_axis_off()
            if c < len(row):
                _draw(axis, row[c])
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_with(path, lambda tmp: figure.savefig(tmp, format="png", dpi=90), suffix=".png")
    plt.close(figure)
    return path


def _draw(axis, panel: Panel) -> None:
    array = np.asarray(panel.array, dtype=np.float32)
    if panel.kind == "label":
        axis.imshow(array, cmap="viridis", vmin=0, vmax=max(panel.classes - 1, 1), interpolation="nearest")
    elif panel.kind == "errors":
        axis.imshow(array > 0, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    elif panel.kind == "map":
        axis.imshow(array, cmap="inferno")
    else:
        low, high = np.percentile(array, [0.5, 99.5])
        axis.imshow(array, cmap="gray", vmin=low, vmax=high if high > low else low + 1)
    axis.set_title(panel.caption, fontsize=8)
