"""Rectified flow (MONAI's RFlowScheduler, through ImageGenerator's training loss and sampler) learns a trivially
learnable 2D distribution on the CPU: centred discs of random radius, 16 x 16, 600 seeded steps, EMA sampled.

The statistic is the mean radius sqrt(area / pi) of the generated discs (area: pixels above 0), which must lie
within 10 % of the data's. A plain torch loop over nnugen's network and model (not nnU-Net)."""

from __future__ import annotations

import math

import torch

from nnugen.config import DiffusionSettings, GenerationSettings, SamplerSettings
from nnugen.models.image_generator import ImageGenerator
from nnugen.networks import TimeConditionedUNet

SIZE = 16
RADII = (2.5, 6.5)


def discs(radii: torch.Tensor) -> torch.Tensor:
    """(B, 1, SIZE, SIZE) images in [-1, 1]: 1 inside a centred disc of each radius, -1 outside."""
    axis = torch.arange(SIZE, dtype=torch.float32) - (SIZE - 1) / 2
    distance = (axis.view(-1, 1) ** 2 + axis.view(1, -1) ** 2).sqrt()
    return torch.where(distance <= radii.view(-1, 1, 1, 1), 1.0, -1.0)


def mean_radius(images: torch.Tensor) -> float:
    """Mean of sqrt(area / pi) over a batch (B, 1, H, W), the area counted as pixels above 0."""
    return float((images > 0).flatten(1).sum(1).float().div(math.pi).sqrt().mean())


def generator_model(process: str, model_output: str = "eps", loss_weighting: str = "uniform") -> ImageGenerator:
    network = TimeConditionedUNet(1, 1, features_per_stage=(16, 32, 32), kernel_sizes=((3, 3),) * 3,
                                  strides=((1, 1), (2, 2), (2, 2)), n_conv_per_stage=(1, 1, 1),
                                  n_conv_per_stage_decoder=(1, 1), norm="group", time_embed_dim=32)
    diffusion = DiffusionSettings(process=process, model_output=model_output, loss_weighting=loss_weighting)
    return ImageGenerator(network, 1, 0, (SIZE, SIZE), diffusion, SamplerSettings(name="ddim", steps=20),
                          GenerationSettings(mode="image"), ema_decay=0.995)


def train_and_sample(model: ImageGenerator, iterations: int, seed: int = 0, batch: int = 32,
                     samples: int = 256) -> tuple[float, float]:
    """(data mean radius, sample mean radius of the EMA model) after ``iterations`` AdamW steps at 2e-3, seeded."""
    torch.manual_seed(seed)
    data = torch.Generator().manual_seed(seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(iterations):
        radii = RADII[0] + (RADII[1] - RADII[0]) * torch.rand(batch, generator=data)
        loss = model(discs(radii))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.update_ema()
    model.eval()
    generated = model.sample(samples, generator=torch.Generator().manual_seed(seed + 2))
    # the data's statistic: the estimator over radii evenly covering the uniform range (no sampling noise)
    return mean_radius(discs(torch.linspace(*RADII, 1001))), mean_radius(generated)


def test_rectified_flow_learns_disc_radii() -> None:
    data_radius, sample_radius = train_and_sample(generator_model("rflow"), iterations=600)
    assert abs(sample_radius - data_radius) <= 0.1 * data_radius, (sample_radius, data_radius)
