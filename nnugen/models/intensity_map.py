"""Per-channel linear map between nnU-Net's preprocessed intensities and the [-1, 1] range diffusion models work
in, and on to the dataset's original units (the ``intensity`` section of the plans, see nnugen_planner)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor

from nnugen.config import IntensitySettings


class IntensityMap:
    """``to_model``: preprocessed (B, C, ...) -> [-1, 1] (clamped); ``to_preprocessed`` back; ``to_original``:
    preprocessed -> original units (z * std + mean per channel: exact for CT, dataset-level for z-scored MR)."""

    def __init__(self, settings: IntensitySettings):
        if not settings.channels:
            raise ValueError("the plans have no intensity map (intensity.channels is empty); re-run nnugen_plan")
        self.low = torch.tensor([c.low for c in settings.channels], dtype=torch.float32)
        self.high = torch.tensor([c.high for c in settings.channels], dtype=torch.float32)
        self.mean = torch.tensor([c.mean for c in settings.channels], dtype=torch.float32)
        self.std = torch.tensor([c.std for c in settings.channels], dtype=torch.float32)

    @classmethod
    def of_channels(cls, settings: IntensitySettings, indices: Sequence[int]) -> IntensityMap:
        """The map of the input channels ``indices`` alone (e.g. the image channels beside an anatomy mask)."""
        return cls(replace(settings, channels=tuple(settings.channels[k] for k in indices)))

    def _per_channel(self, values: Tensor, like: Tensor) -> Tensor:
        if like.shape[1] != values.numel():
            raise ValueError(f"{like.shape[1]} channels, but the intensity map has {values.numel()}")
        return values.to(like.device, like.dtype).view(1, -1, *([1] * (like.ndim - 2)))

    def to_model(self, x: Tensor) -> Tensor:
        low, high = self._per_channel(self.low, x), self._per_channel(self.high, x)
        return (2 * (x - low) / (high - low) - 1).clamp(-1, 1)

    def to_preprocessed(self, y: Tensor) -> Tensor:
        low, high = self._per_channel(self.low, y), self._per_channel(self.high, y)
        return (y.clamp(-1, 1) + 1) / 2 * (high - low) + low

    def to_original(self, x: Tensor) -> Tensor:
        return x * self._per_channel(self.std, x) + self._per_channel(self.mean, x)
