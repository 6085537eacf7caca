"""Sampling runs in the plan's precision whatever autocast the caller opened: nnU-Net's validation step and predictor
open ``torch.autocast("cuda")`` (fp16) on a GPU. On the CPU an enclosing CPU autocast stands in for it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nnugen.config import (
    AnomalySettings,
    ChannelIntensity,
    DiffusionSettings,
    GenerationSettings,
    IntensitySettings,
    SamplerSettings,
)
from nnugen.models.anomaly_segmenter import AnomalySegmenter
from nnugen.models.diffusion_segmenter import DiffusionSegmenter
from nnugen.models.image_generator import ImageGenerator
from nnugen.models.precision import planned_autocast


class DtypeRecorder(nn.Module):
    """A 1x1 conv denoiser ``(x, t) -> out`` that records the dtype its convolution computed in."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels_in, channels_out, 1)
        self.seen: list[torch.dtype] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        self.seen.append(out.dtype)
        return out


EXPECTED = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@pytest.mark.parametrize("amp", ["fp32", "bf16"])
def test_segmentation_samples_in_the_planned_dtype_under_the_callers_fp16(amp):
    denoiser = DtypeRecorder(1 + 2, 2)
    model = DiffusionSegmenter(denoiser, 2, DiffusionSettings(timesteps=5),
                               SamplerSettings(name="ddim", steps=2), amp=amp).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        logits = model(torch.randn(1, 1, 8, 8))
    assert set(denoiser.seen) == {EXPECTED[amp]}
    assert logits.shape == (1, 2, 8, 8) and torch.isfinite(logits).all()


def test_anomaly_counterfactuals_in_the_planned_dtype_under_the_callers_fp16():
    denoiser = DtypeRecorder(1, 1)
    generator = ImageGenerator(denoiser, 1, 0, (8, 8), DiffusionSettings(timesteps=20, model_output="eps"),
                               SamplerSettings(name="ddim", steps=2, seeds=1), GenerationSettings(mode="image"))
    model = AnomalySegmenter(generator, AnomalySettings(strengths=(0.5,)),
                             IntensitySettings(channels=(ChannelIntensity(),)), 2, amp="fp32").eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        model.anomaly_map(torch.randn(1, 1, 8, 8))
    assert denoiser.seen and set(denoiser.seen) == {torch.float32}


def test_no_autocast_of_its_own_on_the_cpu():
    # nnugen never autocasts on the CPU by itself (slow, no memory to win): only a caller's autocast is replaced
    with planned_autocast(torch.device("cpu"), "bf16"):
        assert not torch.is_autocast_enabled("cpu")
    with pytest.raises(ValueError, match="bf16, fp16 or fp32"):
        planned_autocast(torch.device("cpu"), "half")
