"""The anatomy mask of counterfactual anomaly segmentation: one input channel of the dataset (e.g. a spinal-cord or
organ mask, normalisation ``noNorm``) that is never modelled as an image. It bounds the anomaly map, and a T2I-Adapter
(Mou et al. 2023; ``nnugen.networks.label_adapter``) can condition the counterfactual on it.

nnU-Net resamples every input channel with the images' interpolation, so the mask arrives with fractional values at
its border; it is read as ``channel > 0.5``. Layout: images (B, C, *spatial), masks (B, 1, *spatial) bool.
"""

from __future__ import annotations

from torch import Tensor

from nnugen.diffusion import one_hot

MASK_LEVEL = 0.5


def split_anatomy(image: Tensor, index: int) -> tuple[Tensor, Tensor]:
    """(the C - 1 image channels (B, C - 1, *spatial), the anatomy mask (B, 1, *spatial) bool) of ``image``
    (B, C, *spatial) whose channel ``index`` holds the mask."""
    if image.ndim < 3 or not 0 <= index < image.shape[1] or image.shape[1] < 2:
        raise ValueError(f"the anatomy mask is channel {index}, but the image has shape {tuple(image.shape)}; it needs "
                         "the mask and at least one image channel, (B, C >= 2, *spatial)")
    others = [k for k in range(image.shape[1]) if k != index]
    return image[:, others], image[:, index:index + 1] > MASK_LEVEL


def anatomy_condition(mask: Tensor) -> Tensor:
    """Anatomy mask (B, 1, *spatial) bool -> its one-hot in [-1, 1] (B, 2, *spatial): channel 0 outside the mask,
    channel 1 inside (how label maps condition a ``LabelAdapter``)."""
    # one_hot's result is channels-last in memory; the condition stays contiguous, so the adapter's convolutions run
    # on the layout they always had
    return one_hot(mask.bool(), 2, diffusion_space=True).contiguous()
