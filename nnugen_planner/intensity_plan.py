"""The map from nnU-Net's preprocessed intensities to [-1, 1] for generative and anomaly models, and back to the
dataset's original units. nnU-Net hands the trainer z-scored data (``ZScoreNormalization``: per image, so the inverse
uses the dataset's foreground mean and std, an approximation) or CT-normalised data (clipped to the foreground
0.5 / 99.5 percentiles, then standardised with dataset statistics: exactly invertible inside the clip range).
The background of MR images (about 0 in original units) lies below the foreground percentiles, so ``low`` includes
it rather than clipping it away."""

from __future__ import annotations

from typing import Any

from nnugen.config import ChannelIntensity, IntensitySettings


def _channel(scheme: str, stats: dict[str, float]) -> ChannelIntensity:
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


def intensity_from_plans(plans: dict[str, Any], configuration: dict[str, Any]) -> IntensitySettings:
    properties = plans.get("foreground_intensity_properties_per_channel", {})
    schemes = configuration.get("normalization_schemes", [])
    return IntensitySettings(channels=tuple(_channel(scheme, properties.get(str(i), {}))
                                            for i, scheme in enumerate(schemes)))
