"""How an anomaly model reads nnU-Net's preprocessed input (B, C_in, *spatial): every channel but the anatomy mask is an
image, mapped to the model's [-1, 1] with the plans' intensity map of its own channel; the anatomy mask's channel
(``anomaly.condition_channel``), if there is one, is read as channel > 0.5 (nnugen.anomaly.anatomy_mask)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from nnugen.anomaly import split_anatomy, unpadded_box
from nnugen.config import IntensitySettings
from nnugen.models.intensity_map import IntensityMap


@dataclass(frozen=True)
class AnomalyInput:
    """The input channels of an anomaly model.

    Example::

        >>> from nnugen.config import ChannelIntensity
        >>> channels = AnomalyInput(IntensitySettings(channels=(ChannelIntensity(),) * 2), anatomy=0)
        >>> channels.image_indices
        [1]
    """

    intensity: IntensitySettings
    """The plans' intensity map of every input channel."""
    anatomy: int | None = None
    """The input channel of the anatomy mask; None without one."""

    @property
    def image_indices(self) -> list[int]:
        """The input channels that are images (all but the anatomy mask)."""
        return [k for k in range(len(self.intensity.channels)) if k != self.anatomy]

    @property
    def image_map(self) -> IntensityMap:
        """The intensity map of the image channels (model range <-> preprocessed intensities)."""
        return IntensityMap.of_channels(self.intensity, self.image_indices)

    def split(self, image: Tensor) -> tuple[Tensor, Tensor | None]:
        """Preprocessed input (B, C_in, *spatial) -> (its image channels in the model's [-1, 1] (float32), the anatomy
        mask (B, 1, *spatial) bool, or None without an anatomy channel)."""
        image, mask = (image, None) if self.anatomy is None else split_anatomy(image, self.anatomy)
        return self.image_map.to_model(image.float()), mask

    def unpadded_boxes(self, image: Tensor) -> list[tuple[slice, ...]]:
        """Per sample of a preprocessed input (B, C_in, *spatial), the spatial box without the padding nnU-Net's
        predictor adds to a case smaller than the patch (its image channels exactly 0; anomaly_map.unpadded_box)."""
        return [unpadded_box(sample[self.image_indices]) for sample in image]
