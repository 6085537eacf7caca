"""Anomaly strengths and seeds denoised together: stacked on the batch axis, one sampler loop per group, they give the
one-at-a-time results for fixed seeds (the same noise draws exactly, the same updates up to the denoiser's round-off
across batch sizes), and the denoiser really is called with a batch above 1. The anomaly path samples with DDIM eta 0
only (check_sampler refuses other samplers); its randomness is the partial-noising draw, Gaussian or simplex."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from nnugen.anomaly import simplex_noise_like
from nnugen.anomaly.counterfactual import seeded_counterfactuals
from nnugen.config import (
    AnomalySettings,
    ChannelIntensity,
    DenoiserSettings,
    DiffusionSettings,
    GenerationSettings,
    IntensitySettings,
    SamplerSettings,
    TaskSettings,
    TrainingSettings,
)
from nnugen.diffusion import (
    alphas_cumprod,
    batch_timesteps,
    make_betas,
    partial_start,
    q_sample,
    randn_like,
    sampling_timesteps,
    x0_denoiser,
)
from nnugen.models.anomaly_segmenter import AnomalySegmenter
from nnugen.models.image_generator import ImageGenerator
from nnugen.samplers import ddim, ddim_invert

ABAR = alphas_cumprod(make_betas("cosine", 1000))
# strength 0.002 starts at t0 = 1: two DDIM steps where the others take six, so it leaves the batch early
STRENGTHS, STEPS, SEEDS = (0.002, 0.5, 1.0), 6, 4
IMAGES = {"2d": (2, 1, 16, 16), "3d": (1, 1, 8, 8, 8)}


def _denoiser_settings(dims: int) -> DenoiserSettings:
    return DenoiserSettings(features_per_stage=(8, 16), kernel_sizes=((3,) * dims,) * 2,
                            strides=((1,) * dims, (2,) * dims), n_conv_per_stage=(1, 1), n_conv_per_stage_decoder=(1,),
                            time_embed_dim=16)


def _tiny_denoiser(dims: int):
    """A tiny untrained eps U-Net as ``denoise(x_t, t) -> x0_hat``, and the list of batch sizes it was called with.

    In float64: DDIM inversion up to strength 1 ends at abar_999 ~ 2.4e-9, where the x0 estimate divides by
    sqrt(abar) and a float32 network's round-off across batch sizes grows to ~1e-3; float64 keeps it at round-off."""
    torch.manual_seed(0)
    task = TaskSettings(denoiser=_denoiser_settings(dims), diffusion=DiffusionSettings(schedule="cosine"),
                        generation=GenerationSettings(mode="image"))
    network = ImageGenerator.from_settings(task, 1, 2, (8,) * dims).denoiser.double().eval()
    denoise = x0_denoiser(lambda x, t: network(x, t.to(x.dtype)), ABAR, "eps", clip=(-1.0, 1.0))
    calls: list[int] = []

    def counted(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return denoise(x, t)

    return counted, calls


def _one_at_a_time(denoise, image, noise: str, inversion: bool):
    """The per-member loop nnugen ran before batching: seed k's generator (seed k) serves the strengths in turn, each
    counterfactual is one call of the samplers' ddim (after ddim_invert or a noise draw). -> (results, x_t0 starts)."""
    results, starts = [], []
    for k in range(SEEDS):
        generator = torch.Generator().manual_seed(k)
        for strength in STRENGTHS:
            t0 = partial_start(strength, ABAR.shape[0])
            grid = sampling_timesteps(ABAR.shape[0], min(STEPS, t0 + 1), start=t0)
            if inversion:
                x_t0 = ddim_invert(denoise, image, ABAR, grid.flip(0))
            else:
                eps = randn_like(image, generator) if noise == "gaussian" else simplex_noise_like(image, generator)
                x_t0 = q_sample(image, batch_timesteps(t0, image), ABAR, eps)
            starts.append(x_t0)
            results.append(ddim(denoise, x_t0, ABAR, grid, eta=0.0))
    return torch.stack(results), starts


@pytest.mark.parametrize("max_batch", [1, 5, 64])
@pytest.mark.parametrize("mode", ["gaussian", "simplex", "inversion"])
@pytest.mark.parametrize("dims", IMAGES, ids=IMAGES.keys())
def test_batched_strengths_and_seeds_equal_one_at_a_time(dims, mode, max_batch):
    shape = IMAGES[dims]
    image = torch.randn(shape, generator=torch.Generator().manual_seed(1234), dtype=torch.float64).clamp(-1, 1)
    denoise, calls = _tiny_denoiser(len(shape) - 2)
    noise, inversion = ("gaussian", True) if mode == "inversion" else (mode, False)
    expected, starts = _one_at_a_time(denoise, image, noise, inversion)
    reference_calls = list(calls)
    calls.clear()

    first_inputs = []
    original = denoise

    def recording(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not first_inputs:
            first_inputs.append(x.clone())
        return original(x, t)

    generators = [torch.Generator().manual_seed(k) for k in range(SEEDS)]
    batched = seeded_counterfactuals(recording, image, ABAR, STRENGTHS, STEPS, noise, inversion, generators, max_batch)
    assert batched.shape == (SEEDS * len(STRENGTHS), *shape)  # seed-major: the strengths of seed 0 first
    torch.testing.assert_close(batched, expected, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(batched[0], batched[1])  # the members are different counterfactuals

    batch = shape[0]
    # the same work, in fewer and larger denoiser calls, never above max_batch (or one member, B samples)
    assert sum(calls) == sum(reference_calls) and set(reference_calls) == {batch}
    assert max(calls) <= max(max_batch, batch)
    if max_batch >= 2 * batch:
        assert max(calls) > batch and len(calls) < len(reference_calls)
    else:
        assert calls == reference_calls
    if max_batch >= SEEDS * len(STRENGTHS) * batch and not inversion:
        # one group, strength-major: the first call holds every member's x_t0, bitwise the one-at-a-time draw
        rows = first_inputs[0].split(batch)
        for k in range(SEEDS):
            for s in range(len(STRENGTHS)):
                assert torch.equal(rows[s * SEEDS + k], starts[k * len(STRENGTHS) + s])


def test_max_batch_is_checked():
    image, (denoise, _) = torch.zeros(IMAGES["2d"]), _tiny_denoiser(2)
    with pytest.raises(ValueError, match="max_batch must be an integer >= 1"):
        seeded_counterfactuals(denoise, image, ABAR, STRENGTHS, STEPS, max_batch=0)
    with pytest.raises(ValueError, match="at least one torch.Generator"):
        seeded_counterfactuals(denoise, image, ABAR, STRENGTHS, STEPS, generators=())
    with pytest.raises(ValueError, match="anomaly.max_batch"):
        AnomalySettings(max_batch=0)
    assert AnomalySettings.from_dict({}).max_batch == 8  # plans written before the setting get the default


SEGMENTERS = {"2d": ((1, 1, 24, 20), (16, 16), False), "3d": ((1, 1, 12, 8, 8), (8, 8, 8), False),
              "2d-anatomy-adapter": ((1, 2, 24, 20), (16, 16), True)}


def _segmenter(dims: int, patch: tuple[int, ...], adapter: bool) -> AnomalySegmenter:
    """A tiny anomaly model, 4 seeds at 3 strengths, its tiles larger than the patch (windowed denoiser); with
    ``adapter``, input channel 1 is an anatomy mask conditioning a (randomly "trained") anatomy adapter."""
    torch.manual_seed(0)
    anomaly = AnomalySettings(strengths=(0.25, 0.5, 0.75), condition_channel="noNorm" if adapter else "")
    task = TaskSettings(training=TrainingSettings(ema_decay=0.0), denoiser=_denoiser_settings(dims),
                        diffusion=DiffusionSettings(schedule="cosine"), sampler=SamplerSettings(steps=3, seeds=4),
                        anomaly=anomaly,
                        generation=GenerationSettings(mode="label_adapter" if adapter else "image",
                                                      condition_dropout=0.0))
    generator = ImageGenerator.from_settings(task, 1, 2, patch)
    channels = (ChannelIntensity(low=-2.0, high=3.0),) + ((ChannelIntensity("NoNormalization", 0.0, 1.0),)
                                                          if adapter else ())
    model = AnomalySegmenter(generator, anomaly, IntensitySettings(channels=channels), 2)
    if adapter:
        model.set_condition_index(1)
        with torch.no_grad():  # zero-initialised residuals would leave the condition unused
            for stage in generator.adapter.stages:
                stage.out.weight.normal_(0, 0.5)
    return model.eval()


@pytest.mark.parametrize("name", SEGMENTERS, ids=SEGMENTERS.keys())
def test_the_model_batches_its_strengths_and_seeds_and_gives_the_one_at_a_time_map(name):
    shape, patch, adapter = SEGMENTERS[name]
    model = _segmenter(len(patch), patch, adapter)
    image = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    if adapter:
        image[:, 1] = 0.0
        image[:, 1, 4:18, 3:15] = 1.0
    batch_sizes: list[int] = []
    model_output = model.generator.model_output

    def counted(x_t, t, condition, use_ema=False):
        assert t.shape == (x_t.shape[0],)
        batch_sizes.append(x_t.shape[0])
        return model_output(x_t, t, condition, use_ema)

    model.generator.model_output = counted
    results = {}
    for max_batch in (1, 5, 12):
        model.anomaly = replace(model.anomaly, max_batch=max_batch)
        batch_sizes.clear()
        results[max_batch] = model.run(image), list(batch_sizes)
    one_at_a_time, single_calls = results[1]
    windows = len(single_calls) // (12 * 3)  # windows per tile: every member takes 3 steps
    assert set(single_calls) == {1}
    for max_batch in (5, 12):
        result, calls = results[max_batch]
        assert max(calls) == max_batch and sum(calls) == len(single_calls)
        assert len(calls) == windows * 3 * (1 if max_batch == 12 else 3)  # groups of 5, 5 and 2 members
        torch.testing.assert_close(result.counterfactuals, one_at_a_time.counterfactuals, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(result.members, one_at_a_time.members, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(result.map, one_at_a_time.map, rtol=1e-5, atol=1e-5)
    assert one_at_a_time.map.abs().max() > 0
