"""The map from nnU-Net's preprocessed intensities to [-1, 1] for generative and anomaly models, and back to the
dataset's original units. nnU-Net hands the trainer z-scored data or CT-normalised data (clipped to the foreground
0.5 / 99.5 percentiles, then standardised with dataset statistics: exactly invertible inside the clip range).

``ZScoreNormalization`` standardises each image with its own statistics, so any inverse is an approximation. Where
the raw training images are at hand (``nnUNet_raw``) and the channel is normalised over the whole image (no
``use_mask_for_norm``), the inverse uses the typical per-image mean and std and the range the standardised images
span (image_statistics.py): an MR background at 0 comes back near 0. Otherwise it uses the dataset's foreground mean
and std, and ``low`` is where a background at 0 would lie with them, below the foreground percentiles."""

from __future__ import annotations

from typing import Any

from nnugen.config import ChannelIntensity, IntensitySettings
from nnugen_planner.image_statistics import ImageStatistics


def _channel(scheme: str, stats: dict[str, float], image: ImageStatistics | None = None) -> ChannelIntensity:
    if scheme == "ZScoreNormalization" and image is not None:
        return ChannelIntensity(scheme=scheme, low=round(image.low, 6), high=round(max(image.high, image.low + 1), 6),
                                mean=round(image.mean, 6), std=round(image.std, 6))
    mean, std = float(stats.get("mean", 0.0)), max(float(stats.get("std", 1.0)), 1e-8)
    p_low = float(stats.get("percentile_00_5", mean - 3 * std))
    p_high = float(stats.get("percentile_99_5", mean + 3 * std))
    if scheme == "CTNormalization":
        low, high = (p_low - mean) / std, (p_high - mean) / std
    elif scheme in ("ZScoreNormalization",):
        low, high = (min(0.0, p_low) - mean) / std, (p_high - mean) / std
    elif scheme in ("RescaleTo01Normalization", "RGBTo0_1Normalization"):
        low, high = 0.0, 1.0
        mean, std = (0.0, 255.0) if scheme == "RGBTo0_1Normalization" else (
            float(stats.get("min", 0.0)), max(float(stats.get("max", 1.0)) - float(stats.get("min", 0.0)), 1e-8))
    else:  # NoNormalization or a custom scheme: the data arrive in original units
        low, high, mean, std = min(0.0, p_low), p_high, 0.0, 1.0
    if high <= low:
        high = low + 1.0
    return ChannelIntensity(scheme=scheme, low=round(low, 6), high=round(high, 6), mean=round(mean, 6),
                            std=round(std, 6))


def intensity_from_plans(plans: dict[str, Any], configuration: dict[str, Any],
                         images: list[ImageStatistics] | None = None) -> IntensitySettings:
    """The intensity map of a configuration; ``images``: per channel, the raw training images' statistics (used
    for z-scored channels normalised over the whole image), or None."""
    properties = plans.get("foreground_intensity_properties_per_channel", {})
    schemes = configuration.get("normalization_schemes", [])
    whole = whole_image_zscore(configuration)
    return IntensitySettings(channels=tuple(
        _channel(scheme, properties.get(str(i), {}), images[i] if images is not None and whole[i] else None)
        for i, scheme in enumerate(schemes)))


def whole_image_zscore(configuration: dict[str, Any]) -> list[bool]:
    """Per channel: z-scored by nnU-Net over the whole (cropped) image, i.e. without ``use_mask_for_norm``."""
    masks = list(configuration.get("use_mask_for_norm", []))
    return [scheme == "ZScoreNormalization" and not (i < len(masks) and masks[i])
            for i, scheme in enumerate(configuration.get("normalization_schemes", []))]
