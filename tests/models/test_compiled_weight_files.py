"""Weights nnugen exports from a model that trained under ``torch.compile``: the autoencoder (read by the latent
diffusion model, the latent anomaly mode and LDM sampling) and the denoiser (the base of adapters) are written with
the plain model's keys, and files an older nnugen wrote with the wrapper's ``_orig_mod.`` keys load with a note."""

from __future__ import annotations

import json

import pytest
import torch

from nnugen.config import DenoiserSettings, DiffusionSettings, TaskSettings
from nnugen.models.autoencoder_files import CONFIG_FILE, WEIGHTS_FILE, load_autoencoder, save_autoencoder
from nnugen.models.denoiser_files import WEIGHTS_FILE as DENOISER_FILE
from nnugen.models.denoiser_files import denoiser_description, export_denoiser, load_denoiser_weights, save_denoiser
from nnugen.networks.autoencoder import Autoencoder

ARGUMENTS = {"in_channels": 1, "features_per_stage": [8, 8], "strides": [[1, 1], [2, 2]], "latent_channels": 2,
             "kind": "kl", "codebook_size": 16}
SETTINGS = TaskSettings(denoiser=DenoiserSettings(features_per_stage=(8, 16), kernel_sizes=((3, 3),) * 2,
                                                  strides=((1, 1), (2, 2)), n_conv_per_stage=(1, 1),
                                                  n_conv_per_stage_decoder=(1,)),
                        diffusion=DiffusionSettings())


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _trained_compiled_autoencoder() -> tuple[Autoencoder, torch.nn.Module]:
    """(the autoencoder, the torch.compile wrapper nnU-Net's trainer made of it), after one training step."""
    torch.manual_seed(0)
    autoencoder = Autoencoder(**ARGUMENTS)
    compiled = torch.compile(autoencoder, backend="eager")
    reconstruction, regulariser = compiled(torch.randn(2, 1, 8, 8))
    ((reconstruction ** 2).mean() + regulariser).backward()
    with torch.no_grad():
        for parameter in autoencoder.parameters():
            parameter -= 0.1 * parameter.grad
    return autoencoder, compiled


def test_an_autoencoder_exported_from_its_compile_wrapper_loads_for_the_latent_model(tmp_path):
    autoencoder, compiled = _trained_compiled_autoencoder()
    save_autoencoder(compiled, ARGUMENTS, tmp_path)
    assert not any("_orig_mod" in key for key in torch.load(tmp_path / WEIGHTS_FILE, weights_only=True))
    loaded, arguments = load_autoencoder(tmp_path)
    assert arguments == ARGUMENTS
    for key, value in autoencoder.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


@pytest.mark.parametrize("prefix", ["_orig_mod.", "module._orig_mod."])
def test_an_old_file_with_compiled_keys_loads_with_a_note(tmp_path, capsys, prefix):
    autoencoder, compiled = _trained_compiled_autoencoder()
    # what nnugen wrote before: the wrapper's state dict (under DDP, the DDP module's)
    torch.save({prefix + key[len("_orig_mod."):]: value for key, value in compiled.state_dict().items()},
               tmp_path / WEIGHTS_FILE)
    (tmp_path / CONFIG_FILE).write_text(json.dumps(ARGUMENTS))
    loaded, _ = load_autoencoder(tmp_path)
    torch.testing.assert_close(loaded.decoder.state_dict(), autoencoder.decoder.state_dict())
    out = capsys.readouterr().out
    assert "torch.compile" in out and out.count("\n") == 1


def test_a_denoiser_exported_from_a_compiled_module_loads(tmp_path, capsys):
    module = torch.nn.Conv2d(1, 2, 3)
    save_denoiser(torch.compile(module, backend="eager"), denoiser_description(SETTINGS, 1, "image"), tmp_path)
    loaded = load_denoiser_weights(tmp_path, denoiser_description(SETTINGS, 1, "image"))
    assert loaded.keys() == module.state_dict().keys()
    generator = torch.compile(_Generator(module), backend="eager")
    export_denoiser(generator, denoiser_description(SETTINGS, 1, "image"), tmp_path)
    assert load_denoiser_weights(tmp_path, denoiser_description(SETTINGS, 1, "image")).keys() == loaded.keys()
    torch.save({f"_orig_mod.{k}": v for k, v in module.state_dict().items()}, tmp_path / DENOISER_FILE)
    old = load_denoiser_weights(tmp_path, denoiser_description(SETTINGS, 1, "image"))
    assert old.keys() == loaded.keys() and "torch.compile" in capsys.readouterr().out


class _Generator(torch.nn.Module):
    """The attributes ``export_denoiser`` reads of an ImageGenerator."""

    def __init__(self, denoiser: torch.nn.Module):
        super().__init__()
        self.denoiser, self.adapter, self.ema = denoiser, None, None
