"""Anomaly maps from counterfactuals, their post-processing, and ensembles over strengths or seeds.

The residual |x - x_healthy| is the anomaly score of every voxel (Wolleb et al. 2022; pDDPM / cDDPM, Behrendt et
al. 2023; AnoDDPM, Wyatt et al. 2022). Post-processing follows those papers and THOR (Bercea et al. 2024): a median
filter against isolated noisy voxels, a body / brain mask against residuals in the background, and, after
thresholding, removal of connected components smaller than a few voxels.

Layout: maps are (B, 1, *spatial) tensors; images (B, C, *spatial); 2D and 3D share every function. Functions taking
``Tensor | np.ndarray`` work on either and return the same kind; the scipy steps (median filter, connected
components, body mask) run on the CPU and go back to the input's device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

ArrayLike = TypeVar("ArrayLike", Tensor, np.ndarray)
REDUCTIONS = ("mean", "max")


def _check_batched(name: str, array: Tensor | np.ndarray) -> None:
    if array.ndim < 3:
        raise ValueError(f"{name} must be (B, C, *spatial) with 1 to 3 spatial axes, got shape {tuple(array.shape)}")


def _to_numpy(array: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(array, Tensor):
        tensor = array.detach().cpu()
        # numpy has no bfloat16: half-precision maps are processed in float32 (callers cast back).
        return (tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor).numpy()
    return np.asarray(array)


def _like(result: np.ndarray, array: ArrayLike) -> ArrayLike:
    """``result`` as the kind of ``array``: a tensor on its device, or the numpy array itself."""
    return torch.from_numpy(np.ascontiguousarray(result)).to(array.device) if isinstance(array, Tensor) else result


def _per_volume(array: ArrayLike, fn: Callable[[np.ndarray], np.ndarray]) -> ArrayLike:
    """Apply ``fn`` to each spatial volume ``array[b, c]`` in numpy; the result has ``array``'s kind and device."""
    values = _to_numpy(array)
    return _like(np.stack([np.stack([fn(volume) for volume in sample]) for sample in values]), array)


def residual_map(image: Tensor, counterfactual: Tensor, reduce: str = "mean") -> Tensor:
    """|image - counterfactual| combined over channels: (B, C, *spatial) -> (B, 1, *spatial).

    ``reduce``: "mean" (the channels vote) or "max" (a lesion visible in one contrast is enough).
    """
    _check_batched("image", image)
    if image.shape != counterfactual.shape:
        raise ValueError(f"image {tuple(image.shape)} and counterfactual {tuple(counterfactual.shape)} must have one "
                         "shape; pass the counterfactual of this very image")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    residual = (image - counterfactual).abs()
    return residual.mean(dim=1, keepdim=True) if reduce == "mean" else residual.amax(dim=1, keepdim=True)


def remove_small_components(binary: ArrayLike, min_voxels: int) -> ArrayLike:
    """Binary (B, C, *spatial) with every connected component of fewer than ``min_voxels`` voxels cleared.

    Components use full connectivity (8 neighbours in 2D, 26 in 3D, as cc3d's default), per (sample, channel);
    ``min_voxels`` <= 1 keeps everything. Apply it to the thresholded map, never to the continuous one.
    """
    _check_batched("binary", binary)
    if isinstance(min_voxels, bool) or not isinstance(min_voxels, int) or min_voxels < 0:
        raise ValueError(f"min_voxels must be an integer >= 0 (0 or 1 keeps every component), got {min_voxels!r}")

    def clean(volume: np.ndarray) -> np.ndarray:
        volume = volume.astype(bool)
        if min_voxels <= 1 or not volume.any():
            return volume
        labels, _ = ndimage.label(volume, structure=ndimage.generate_binary_structure(volume.ndim, volume.ndim))
        sizes = np.bincount(labels.ravel())
        keep = sizes >= min_voxels
        keep[0] = False
        return keep[labels]

    return _per_volume(binary, clean)


def unpadded_box(image: Tensor | np.ndarray, value: float = 0.0) -> tuple[slice, ...]:
    """The spatial box of ``image`` (C, *spatial) without its padding: along each spatial axis, the hyperplanes at
    either end in which every channel equals ``value`` exactly are left out.

    Why: nnU-Net's predictor pads a case smaller than the patch with the preprocessed 0 (the dataset's mean intensity
    under z-scoring) before tiling it. Seen as image, that padding is a frame brighter than the background of the
    case; the body mask would take it for tissue, join it to the body and fill everything it encloses, so nothing of
    the tile would be masked or eroded. The region is found on the box instead, as on the unpadded case. An image that
    is ``value`` everywhere has nothing to tell apart: its whole box is returned.
    """
    values = _to_numpy(image)
    if values.ndim < 2:
        raise ValueError(f"image must be (C, *spatial), got shape {tuple(values.shape)}")
    padding = (values == value).all(axis=0)
    if padding.all():
        return tuple(slice(0, size) for size in padding.shape)
    box = []
    for axis in range(padding.ndim):
        others = tuple(a for a in range(padding.ndim) if a != axis)
        kept = np.flatnonzero(~padding.all(axis=others))
        box.append(slice(int(kept[0]), int(kept[-1]) + 1))
    return tuple(box)


def erode_mask(mask: ArrayLike, voxels: int) -> ArrayLike:
    """Binary (B, C, *spatial) eroded by ``voxels`` steps of face connectivity (4 neighbours in 2D, 6 in 3D), per
    (sample, channel). The array's own border does not erode it (scipy's ``border_value=1``): a sliding-window tile
    cuts the body without being its edge. ``voxels`` 0 returns the mask unchanged.

    Why: a counterfactual rebuilds the body's edge worst, so residuals crowd along it; Baur et al. 2021 (their
    comparative study's post-processing) and Behrendt et al. 2023 erode the brain mask before scoring for that reason.
    """
    _check_batched("mask", mask)
    if isinstance(voxels, bool) or not isinstance(voxels, int) or voxels < 0:
        raise ValueError(f"voxels must be an integer >= 0 (0 = no erosion), got {voxels!r}")
    if voxels == 0:
        return mask

    def erode(volume: np.ndarray) -> np.ndarray:
        structure = ndimage.generate_binary_structure(volume.ndim, 1)
        return ndimage.binary_erosion(volume.astype(bool), structure, iterations=voxels, border_value=1)

    return _per_volume(mask, erode)


def postprocess(
    anomaly_map: Tensor,
    median_filter: int = 3,
    mask: Tensor | None = None,
    min_component_voxels: int = 0,
    threshold: float | None = None,
) -> Tensor:
    """Post-processed map (B, 1, *spatial), same dtype and device; every step off when its argument is 0 / None.

    1. ``median_filter``: a median filter of that width per spatial axis (scipy.ndimage, mirrored borders); 0 or 1
       is off; an even width is used as given (scipy centres it one voxel off).
    2. ``mask``: (B, 1, *spatial) or broadcastable, multiplied in (a body_mask, or a brain mask you have).
    3. ``min_component_voxels`` with ``threshold``: voxels above the threshold whose connected component has fewer
       voxels are set to 0, so ``result > threshold`` equals ``remove_small_components(map > threshold, n)`` while
       the map stays continuous for AUPRC. Components only exist after thresholding, so this step needs the
       threshold (from threshold.py); without one pass min_component_voxels=0 and call remove_small_components on
       your binary segmentation.
    """
    _check_batched("anomaly_map", anomaly_map)
    if isinstance(median_filter, bool) or not isinstance(median_filter, int) or median_filter < 0:
        raise ValueError(f"median_filter must be an integer width >= 0 (0 or 1 = off, 3 is usual), got "
                         f"{median_filter!r}")
    if min_component_voxels and threshold is None:
        raise ValueError("min_component_voxels > 0 needs threshold=...: small components are removed after "
                         "thresholding; or pass min_component_voxels=0")
    result = anomaly_map
    if median_filter > 1:
        result = _per_volume(result, lambda v: ndimage.median_filter(v, size=median_filter, mode="mirror"))
        result = result.to(anomaly_map.dtype)
    if mask is not None:
        result = result * mask.to(device=result.device, dtype=result.dtype)
    if min_component_voxels and threshold is not None:
        above = result > threshold
        result = torch.where(above & ~remove_small_components(above, min_component_voxels), 0, result)
    return result


def body_mask(image: ArrayLike, threshold_fraction: float = 0.05, smoothing: float = 1.0) -> ArrayLike:
    """Foreground mask (B, 1, *spatial) bool of ``image`` (B, C, *spatial): a simple body / brain mask.

    Each channel is smoothed (Gaussian, ``smoothing`` voxels, so background noise such as Rician noise in MR air does
    not cross the threshold) and scaled to its robust range p1..p99; the channel mean above ``threshold_fraction``
    counts as foreground; the largest connected component is kept (face connectivity) and its holes are filled. A
    constant image has no foreground to tell apart: its mask is all True (nothing is masked away).
    """
    _check_batched("image", image)
    if not 0 <= threshold_fraction < 1:
        raise ValueError(f"threshold_fraction must lie in [0, 1) (fraction of the p1..p99 range), got "
                         f"{threshold_fraction}")
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0 voxels (0 = off), got {smoothing}")

    def scaled(volume: np.ndarray) -> np.ndarray:
        volume = ndimage.gaussian_filter(volume.astype(np.float64), smoothing) if smoothing > 0 else volume
        low, high = np.percentile(volume, [1, 99])
        return np.ones(volume.shape) if high <= low else (volume - low) / (high - low)

    def largest_filled(volume: np.ndarray) -> np.ndarray:
        labels, count = ndimage.label(volume)
        if count > 1:
            volume = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
        return ndimage.binary_fill_holes(volume)

    score = _per_volume(_to_numpy(image), scaled).mean(axis=1, keepdims=True)
    return _like(_per_volume(score > threshold_fraction, largest_filled), image)


def _stack(maps: Tensor | Sequence[Tensor]) -> Tensor:
    if not isinstance(maps, Tensor):
        maps = list(maps)
        if not maps:
            raise ValueError("maps is empty; pass (S, B, 1, *spatial) maps or a non-empty list of (B, 1, *spatial)")
        maps = torch.stack(maps)
    if maps.ndim < 4 or maps.shape[0] < 1:
        raise ValueError(f"maps must be (S, B, 1, *spatial) or a non-empty list of (B, 1, *spatial) maps, got shape "
                         f"{tuple(maps.shape)}")
    return maps


def ensemble_map(maps: Tensor | Sequence[Tensor]) -> Tensor:
    """Mean over the first axis of (S, B, 1, *spatial) maps (strengths and / or seeds) -> (B, 1, *spatial)."""
    return _stack(maps).mean(dim=0)


def seed_averaged_residuals(image: Tensor, counterfactuals: Tensor, seeds: int, reduce: str = "mean") -> Tensor:
    """Residual maps of the seeds' mean counterfactual, one per strength: (S, B, 1, *spatial).

    ``counterfactuals`` (seeds x S, B, C, *spatial), all S strengths of seed 0 first. Each seed's counterfactual
    carries its own sampling noise in healthy tissue, which the mean of per-seed residuals keeps (|noise| does not
    average out) and the residual of the mean counterfactual shrinks by about sqrt(seeds), while a lesion that every
    seed removes stays in full (measured on the 2D synthetic-lesion benchmark, docs/benchmarks.md).
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1 or counterfactuals.shape[0] % seeds:
        raise ValueError(f"seeds must be a positive integer dividing the {counterfactuals.shape[0]} counterfactuals "
                         f"(seeds x strengths), got {seeds!r}")
    per_strength = counterfactuals.reshape(seeds, -1, *counterfactuals.shape[1:]).mean(dim=0)
    return torch.stack([residual_map(image, counterfactual, reduce) for counterfactual in per_strength])


def uncertainty(maps: Tensor | Sequence[Tensor]) -> Tensor:
    """Per-voxel standard deviation over the first axis of (S, B, 1, *spatial) maps (population std: one map gives
    0) -> (B, 1, *spatial): where strengths or seeds disagree about a voxel."""
    return _stack(maps).std(dim=0, unbiased=False)
