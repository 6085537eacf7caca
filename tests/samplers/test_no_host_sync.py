"""No sampler step reads a device value on the host: the meta device stands in for CUDA. A meta tensor has no data,
so any ``.item()``, ``int()``, ``bool()``, ``.tolist()`` or copy to the CPU of one raises; a sampling run with x,
the denoiser and the model's buffers on the meta device therefore proves that the loop has no data-dependent host
sync (on CUDA each would wait for the GPU once per step). The schedule (alpha-bar) and the timesteps stay on the CPU,
as the models keep them, and are read on the host once per run."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from nnugen.config import DiffusionSettings, GenerationSettings, SamplerSettings
from nnugen.diffusion import alphas_cumprod, make_betas, sampling_timesteps, schedule_at, x0_denoiser
from nnugen.models.diffusion_segmenter import DiffusionSegmenter
from nnugen.models.image_generator import ImageGenerator
from nnugen.samplers import ddim, ddim_invert, ddpm, dpm_solver_pp

META = torch.device("meta")
RUNS = ((ddpm, {}), (ddim, {"eta": 0.5}), (ddim, {"eta": 0.0}), (dpm_solver_pp, {}))


class TimeConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time = nn.Linear(1, out_channels)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.conv(x) + self.time(t[:, None] / 1000).view(x.shape[0], -1, 1, 1)


def test_a_meta_tensor_refuses_every_host_read() -> None:
    x = torch.zeros(2, device=META)
    for read in (lambda: x[0].item(), lambda: int(x[0]), lambda: bool(x[0]), lambda: x.tolist(), lambda: x.cpu()):
        with pytest.raises((RuntimeError, NotImplementedError)):
            read()


def test_schedule_lookups_read_nothing_on_the_host() -> None:
    abar = alphas_cumprod(make_betas("linear", 100))
    like = torch.zeros(3, 1, 4, 4, device=META)
    t = torch.full((3,), 7, dtype=torch.long, device=META)
    assert schedule_at(abar.to(META), t, like).device == META  # the model's buffer on the device
    assert schedule_at(abar, t, like).shape == (3, 1, 1, 1)  # a host schedule moves to the device


@pytest.mark.parametrize(("sampler", "options"), RUNS)
@pytest.mark.parametrize("kind", ("x0", "eps", "v"))
def test_samplers_run_on_the_meta_device(sampler, options: dict, kind: str) -> None:
    abar = alphas_cumprod(make_betas("linear", 1000))
    network = TimeConv(2, 2).to(META)
    denoise = x0_denoiser(network, abar.to(META), kind, clip=(-1.0, 1.0))
    x = torch.randn(2, 2, 8, 8, device=META)
    steps: list[int] = []
    out = sampler(denoise, x, abar, sampling_timesteps(1000, 10), callback=lambda i, x, x0_hat: steps.append(i),
                  **options)
    assert out.device == META and out.shape == x.shape and steps == list(range(10))


def test_ddim_inversion_runs_on_the_meta_device() -> None:
    abar = alphas_cumprod(make_betas("linear", 1000))
    denoise = x0_denoiser(TimeConv(1, 1).to(META), abar.to(META), "eps")
    out = ddim_invert(denoise, torch.zeros(1, 1, 8, 8, device=META), abar, sampling_timesteps(1000, 5).flip(0))
    assert out.device == META


@pytest.mark.parametrize("spatial", ((8, 8), (12, 10)))
@pytest.mark.parametrize("name", ("ddpm", "ddim", "dpm_solver++"))
@pytest.mark.parametrize("mode", ("image", "label_conditioned"))
def test_image_generator_samples_on_the_meta_device(name: str, mode: str, spatial: tuple[int, int]) -> None:
    """Patch-sized samples and larger ones (the windowed denoiser, several windows per step)."""
    generated, condition = ImageGenerator.channels(1, 2, mode)
    inputs = generated + (condition if mode == "label_conditioned" else 0)
    model = ImageGenerator(TimeConv(inputs, generated), 1, 2, (8, 8), DiffusionSettings(),
                           SamplerSettings(name=name, steps=8, eta=0.5),
                           GenerationSettings(mode=mode, guidance_scale=2.0), ema_decay=0.999).to(META)
    label = torch.zeros(1, condition, *spatial, device=META) if condition else None
    out = model.sample(1, spatial, condition=label, device=META)
    assert out.device == META and out.shape == (1, generated, *spatial)


@pytest.mark.parametrize("name", ("ddpm", "ddim", "dpm_solver++"))
@pytest.mark.parametrize("self_conditioning", (False, True))
def test_segmenter_denoiser_samples_on_the_meta_device(name: str, self_conditioning: bool) -> None:
    """The segmentation model's sampling run (its denoiser wrapper, self-conditioning and schedule) with the model on
    the meta device; a seeded ``torch.Generator`` cannot live there, so the sampler draws from the global RNG."""
    settings = DiffusionSettings(model_output="v", self_conditioning=self_conditioning)
    model = DiffusionSegmenter(TimeConv(1 + 3 * (1 + self_conditioning), 3), 3, settings,
                               SamplerSettings(name=name)).eval().to(META)
    image = torch.zeros(1, 1, 8, 8, device=META)
    sampler = {"ddpm": ddpm, "ddim": ddim, "dpm_solver++": dpm_solver_pp}[name]
    options = {"eta": 0.5} if name == "ddim" else {}
    out = sampler(model.x0_denoiser(image), torch.randn(1, 3, 8, 8, device=META), model.host_alphas_cumprod,
                  sampling_timesteps(1000, 6), **options)
    assert out.device == META


def test_ema_updates_read_the_update_count_once() -> None:
    """The warm-up decay needs the number of updates on the host: read once, then counted there."""
    model = ImageGenerator(TimeConv(1, 1), 1, 0, (8, 8), DiffusionSettings(), SamplerSettings(),
                           GenerationSettings(mode="image"), ema_decay=0.999)
    model.update_ema()  # reads the count (0) once
    model.to(META)
    for _ in range(3):
        model.update_ema()
    assert model.ema_updates.device == META
