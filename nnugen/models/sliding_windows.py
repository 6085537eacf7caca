"""nnU-Net's sliding window for the windowed denoiser (``nnugen.diffusion.windowed_denoiser``): the window starts of
``compute_steps_for_sliding_window`` at nnU-Net's default tile step (half a patch) and the Gaussian importance map of
``compute_gaussian`` (sigma = patch / 8, peak 10, no zeros), exactly as ``nnUNetPredictor`` tiles a case.

The map is computed on the CPU (nnU-Net caches it per tile size) and moved to the sample's device, so sampling on the
meta device, the test stand-in for CUDA, needs no data-dependent step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window
from torch import Tensor

TILE_STEP_SIZE = 0.5  # nnUNetPredictor's default tile_step_size: windows overlap by at least half a patch
SIGMA_SCALE = 1.0 / 8  # nnUNetPredictor's Gaussian: sigma = patch / 8 per axis
VALUE_SCALING = 10.0  # nnUNetPredictor's peak value; the weighted average does not depend on it


def nnunet_windows(spatial: Sequence[int], patch: Sequence[int],
                   device: torch.device | str = "cpu") -> tuple[list[list[int]], Tensor]:
    """(start indices per axis, Gaussian importance map (*patch) float32 on ``device``) for windows of ``patch``
    over a volume ``spatial`` (each patch size <= its axis), from nnU-Net's own functions."""
    starts = compute_steps_for_sliding_window(tuple(int(s) for s in spatial), tuple(int(p) for p in patch),
                                              TILE_STEP_SIZE)
    weights = compute_gaussian(tuple(int(p) for p in patch), SIGMA_SCALE, VALUE_SCALING, torch.float32,
                               torch.device("cpu"))
    return starts, weights.to(device)
