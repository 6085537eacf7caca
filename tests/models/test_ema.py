"""The EMA of a generator's weights: the decay warms up, so a short training does not sample from its random
initialisation, and the number of updates travels in the state dict (a resumed run continues the warm-up)."""

from __future__ import annotations

import pytest
import torch

from nnugen.config import DiffusionSettings, GenerationSettings, SamplerSettings
from nnugen.models.ema import update_ema, warmed_up_decay
from nnugen.models.image_generator import ImageGenerator


def test_the_decay_warms_up_to_the_configured_value():
    assert warmed_up_decay(0.999, 0) == pytest.approx(0.1)
    assert warmed_up_decay(0.999, 90) == pytest.approx(91 / 100)
    assert warmed_up_decay(0.999, 10**6) == 0.999


def test_update_ema_moves_the_average_by_one_minus_the_decay():
    ema, weights = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    torch.nn.init.zeros_(ema.weight), torch.nn.init.ones_(weights.weight)
    update_ema(ema, weights, 0.75)
    assert torch.allclose(ema.weight, torch.full_like(ema.weight, 0.25))


def _generator(ema_decay: float) -> ImageGenerator:
    denoiser = torch.nn.Conv2d(1, 1, 1)
    return ImageGenerator(denoiser, 1, 2, (4, 4), DiffusionSettings(), SamplerSettings(),
                          GenerationSettings(mode="image"), ema_decay)


def test_after_a_short_training_the_average_is_mostly_the_trained_weights():
    generator = _generator(0.999)
    start = generator.ema.weight.detach().clone()
    with torch.no_grad():
        generator.denoiser.weight.fill_(5.0)
    for _ in range(200):
        generator.update_ema()
    # without warm-up 0.999 ** 200 = 82 % of the initial weights would remain
    remaining = (generator.ema.weight - 5.0) / (start - 5.0)
    assert float(remaining.abs().max()) < 0.01
    assert int(generator.ema_updates) == 200


def test_the_update_count_is_in_the_state_dict():
    trained, resumed = _generator(0.999), _generator(0.999)
    for _ in range(7):
        trained.update_ema()
    resumed.load_state_dict(trained.state_dict())
    assert int(resumed.ema_updates) == 7


def _norm_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Conv2d(4, 1, 1))


def test_the_fused_update_equals_the_per_parameter_loop():
    torch.manual_seed(0)
    module = _norm_net()
    module(torch.randn(2, 2, 5, 5))  # BatchNorm running statistics and count move away from their initial values
    ema, looped = _norm_net(), _norm_net()
    looped.load_state_dict(ema.state_dict())
    for decay in (0.1, 0.9, 0.999):
        update_ema(ema, module, decay)
        with torch.no_grad():
            for average, current in zip(looped.parameters(), module.parameters()):
                average.lerp_(current, 1 - decay)
            for average, current in zip(looped.buffers(), module.buffers()):
                average.copy_(current)
    for (name, fused), reference in zip(ema.state_dict().items(), looped.state_dict().values()):
        assert torch.equal(fused, reference), name


def test_one_fused_call_updates_every_parameter(monkeypatch):
    calls = []
    lerp = torch._foreach_lerp_
    monkeypatch.setattr(torch, "_foreach_lerp_", lambda *args: calls.append(len(args[0])) or lerp(*args))
    update_ema(_norm_net(), _norm_net(), 0.5)
    assert calls == [len(list(_norm_net().parameters()))]


def test_mismatched_modules_raise():
    with pytest.raises(ValueError, match="make_ema"):
        update_ema(torch.nn.Linear(2, 1), _norm_net(), 0.5)


def test_a_loaded_update_count_restarts_the_warm_up_there():
    trained, resumed = _generator(0.999), _generator(0.999)
    for _ in range(7):
        trained.update_ema()
    resumed.update_ema()  # the host-side count of the fresh model is now 1
    resumed.load_state_dict(trained.state_dict())
    with torch.no_grad():
        resumed.denoiser.weight.add_(1.0)
    before = resumed.ema.weight.detach().clone()
    resumed.update_ema()
    step = 1 - warmed_up_decay(0.999, 7)  # update number 7 (0-based), as in the run that saved the state
    assert torch.allclose(resumed.ema.weight, before + step * (resumed.denoiser.weight - before))
    assert int(resumed.ema_updates) == 8
