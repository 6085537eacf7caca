"""``progress.png`` of the generative tasks (DDPM, latent diffusion, autoencoder, anomaly): their own losses, in place
of nnU-Net's plot, whose green "pseudo dice" curve would be minus the validation loss (the slot that picks
checkpoint_best; nnugen_generative_trainer.py).

The curves come from nnU-Net's logger (training and validation loss, epoch times, learning rate) and from nnugen's
epoch metrics (epoch_metrics.py: the autoencoder's L1, KL or codebook, perceptual, adversarial and discriminator
losses, the validation PSNR / SSIM). Those metrics are not in nnU-Net's logger or checkpoint, so they are kept, one
value per epoch (None where an epoch has none), in ``progress_losses.json`` next to ``progress.png``, which a resumed
run reads back. Both files are written atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path

from nnugen.atomic_files import atomic_write_json, atomic_write_with

LOSSES_FILE = "progress_losses.json"
NOT_PLOTTED = ("nonfinite_steps", "peak_memory_gb")
"""Metrics of the training log that are no loss (they stay in the log and W&B)."""
QUALITY = ("psnr", "ssim")
"""Reconstruction metrics, plotted on their own panel."""

History = dict[str, list[float | None]]


def record(history: History, epoch: int, means: Mapping[str, float]) -> History:
    """``history`` with the epoch's metric means put at index ``epoch`` (0-based) of each metric's list; epochs a
    metric missed are None. Plain data, so ``json`` writes it."""
    for key in set(history) | set(means):
        values = list(history.get(key, []))[:epoch]
        values += [None] * (epoch - len(values)) + [means.get(key)]
        history[key] = values
    return history


def read_history(folder: str | Path, epochs: int) -> History:
    """The metrics of the first ``epochs`` epochs a run in ``folder`` recorded (a resumed run continues them); an
    empty history when there is no readable file."""
    try:
        data = json.loads((Path(folder) / LOSSES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(key): list(values)[:epochs] for key, values in data.items() if isinstance(values, list)}


def curves(history: History, get_value: Callable, epochs: int) -> dict[str, dict[str, list[float]]]:
    """The panels of the plot, ``{panel: {curve: one value per epoch (NaN where none)}}``, for ``epochs`` epochs:
    ``loss`` (nnU-Net's training and validation loss and the moving average of the validation loss that picks
    checkpoint_best), ``loss parts`` (every other nnugen metric, ``train/l1``, ``val/kl``, ...), ``reconstruction``
    (PSNR in dB and SSIM), ``epoch`` (duration in s and learning rate). ``get_value`` is nnU-Net's
    ``logger.get_value``. Empty panels are left out."""
    def logged(key: str) -> list[float]:
        values = list(get_value(key, step=None))[:epochs]
        return [float(v) for v in values] + [math.nan] * (epochs - len(values))

    def metric(key: str) -> list[float]:
        values = history.get(key, [])[:epochs]
        return [math.nan if v is None else float(v) for v in values] + [math.nan] * (epochs - len(values))

    starts, ends = logged("epoch_start_timestamps"), logged("epoch_end_timestamps")
    names = sorted(k for k in history if k.split("/")[-1] not in NOT_PLOTTED)
    panels = {
        "loss": {"train loss": logged("train_losses"), "validation loss": logged("val_losses"),
                 "validation loss (moving average, picks checkpoint_best)": [-v for v in logged("ema_fg_dice")]},
        "loss parts": {k: metric(k) for k in names if k.split("/")[-1] not in QUALITY},
        "reconstruction": {k: metric(k) for k in names if k.split("/")[-1] in QUALITY},
        "epoch": {"duration [s]": [e - s for s, e in zip(starts, ends)], "learning rate": logged("lrs")},
    }
    return {panel: lines for panel, lines in panels.items() if lines}


def plot_curves(panels: dict[str, dict[str, list[float]]], path: str | Path) -> None:
    """Write ``panels`` (from ``curves``) as a PNG at ``path``, one row per panel, atomically. Lines on a twin
    axis: the learning rate and SSIM (their scale differs from the panel's first curve)."""
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, axes = plt.subplots(len(panels), 1, figsize=(12, 4.5 * len(panels)), squeeze=False)
    for ax, (panel, lines) in zip(axes[:, 0], panels.items()):
        twin = None
        for name, values in lines.items():
            on_twin = name == "learning rate" or name.endswith("ssim")
            if on_twin and twin is None:
                twin = ax.twinx()
            target = twin if on_twin else ax
            style = "--" if name.startswith("val/") or "moving average" in name else "-"
            target.plot(range(len(values)), values, style, marker="o", markersize=3, label=name,
                        color=None if not on_twin else "tab:gray")
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        handles = [h for a in (ax, twin) if a is not None for h in a.get_legend_handles_labels()[0]]
        ax.legend(handles=handles, loc="best", fontsize="small")
    figure.tight_layout()
    atomic_write_with(Path(path), lambda tmp: figure.savefig(tmp, format="png"), suffix=".png")
    plt.close(figure)


def write_progress(folder: str | Path, history: History, get_value: Callable, epochs: int) -> None:
    """``progress_losses.json`` (the history) and ``progress.png`` (the curves) in ``folder``."""
    atomic_write_json(Path(folder) / LOSSES_FILE, {k: [_finite_or_none(v) for v in vs] for k, vs in history.items()})
    plot_curves(curves(history, get_value, epochs), Path(folder) / "progress.png")


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
