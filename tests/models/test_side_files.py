"""Side files read with a schema (issue 15, fault 7): ``denoiser.json``, ``autoencoder.json``, ``latent.json`` and
``threshold.json`` with a wrong type, a missing key, NaN or Infinity give one ValueError line ``FILE: field: what is
wrong; what to do`` (the CLIs print it and exit non-zero), never a TypeError / KeyError traceback."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nnugen.anomaly.threshold import ThresholdRecord
from nnugen.config import DenoiserSettings, DiffusionSettings, TaskSettings
from nnugen.inference.generator_loading import _latent_generator
from nnugen.models.autoencoder_files import load_autoencoder, save_autoencoder
from nnugen.models.denoiser_files import denoiser_description, load_denoiser_weights, save_denoiser
from nnugen.models.latent_generator import LATENT_FILE
from nnugen.networks.autoencoder import Autoencoder

ARGUMENTS = {"in_channels": 1, "features_per_stage": [8, 8], "strides": [[1, 1], [2, 2]], "latent_channels": 2,
             "kind": "kl", "codebook_size": 16}
SETTINGS = TaskSettings(denoiser=DenoiserSettings(features_per_stage=(8, 16), kernel_sizes=((3, 3),) * 2,
                                                  strides=((1, 1), (2, 2)), n_conv_per_stage=(1, 1),
                                                  n_conv_per_stage_decoder=(1,)),
                        diffusion=DiffusionSettings())
DESCRIPTION = denoiser_description(SETTINGS, 1, "image")


def _edit(path: Path, change) -> None:
    """Apply ``change(data)`` to the JSON in ``path``; written as json.dumps does (NaN as ``NaN``)."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _one_line(error: pytest.ExceptionInfo, path: Path, field: str) -> None:
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    assert field in message, message


@pytest.mark.parametrize("change, field", [
    (lambda d: d.update(image_channels="1"), "image_channels: expected int, got '1'"),
    (lambda d: d.pop("mode"), "mode: missing"),
    (lambda d: d["diffusion"].update(beta_end=math.nan), "diffusion.beta_end: nan is not a finite number"),
    (lambda d: d["denoiser"].update(dropout=math.inf), "denoiser.dropout: inf is not a finite number"),
    (lambda d: d.update(denoiser=None), "denoiser: expected a mapping, got None"),
    (lambda d: d.update(diffusion=[1]), "diffusion: expected a mapping, got list"),
    (lambda d: d["denoiser"].update(features_per_stage="8,16"), "denoiser.features_per_stage: expected a list"),
])
def test_a_broken_denoiser_json_names_the_file_and_field(tmp_path, change, field):
    save_denoiser(torch.nn.Conv2d(1, 2, 3), DESCRIPTION, tmp_path)
    _edit(tmp_path / "denoiser.json", change)
    with pytest.raises(ValueError) as error:
        load_denoiser_weights(tmp_path, DESCRIPTION)
    _one_line(error, tmp_path / "denoiser.json", field)
    assert "train the base model" in str(error.value) or "export the base again" in str(error.value)


@pytest.mark.parametrize("change, field", [
    (lambda d: d.update(latent_channels="2"), "latent_channels: expected int, got '2'"),
    (lambda d: d.pop("in_channels"), "in_channels: missing"),
    (lambda d: d.update(strides=[[1, 1], [2, math.nan]]), "strides[1][1]: expected int, got nan"),
    (lambda d: d.update(scale_factor=math.nan), "scale_factor: nan is not a finite number"),
    (lambda d: d.update(features_per_stage=None), "features_per_stage: expected a list, got None"),
    (lambda d: d.update(extra=1), "unknown key(s) extra"),
])
def test_a_broken_autoencoder_json_names_the_file_and_field(tmp_path, change, field):
    save_autoencoder(Autoencoder(**ARGUMENTS), ARGUMENTS, tmp_path)
    _edit(tmp_path / "autoencoder.json", change)
    with pytest.raises(ValueError) as error:
        load_autoencoder(tmp_path)
    _one_line(error, tmp_path / "autoencoder.json", field)
    assert str(error.value).endswith("; train the autoencoder again")


def test_a_list_or_broken_text_in_place_of_autoencoder_json(tmp_path):
    save_autoencoder(Autoencoder(**ARGUMENTS), ARGUMENTS, tmp_path)
    for text, field in (("[1, 2]", "expected a JSON object, got list"), ("{", "not valid JSON"),
                        ("\udcff", "cannot be read")):
        (tmp_path / "autoencoder.json").write_bytes(text.encode("utf-8", "surrogateescape"))
        with pytest.raises(ValueError) as error:
            load_autoencoder(tmp_path)
        _one_line(error, tmp_path / "autoencoder.json", field)


@pytest.mark.parametrize("latent, field", [
    ({"autoencoder_folder": "AE", "scale_factor": "0.5"}, "scale_factor: expected float, got '0.5'"),
    ({"autoencoder_folder": "AE", "scale_factor": math.nan}, "scale_factor: nan is not a finite number"),
    ({"autoencoder_folder": "AE", "scale_factor": math.inf}, "scale_factor: inf is not a finite number"),
    ({"autoencoder_folder": "AE", "scale_factor": -1.0}, "scale_factor: -1.0 must be > 0"),
    ({"scale_factor": 0.5}, "autoencoder_folder: missing"),
    ({"autoencoder_folder": 3, "scale_factor": 0.5}, "autoencoder_folder: expected str, got 3"),
])
def test_a_broken_latent_json_names_the_file_and_field(tmp_path, latent, field):
    latent = {k: str(tmp_path / v) if k == "autoencoder_folder" and isinstance(v, str) else v
              for k, v in latent.items()}
    (tmp_path / "AE").mkdir()
    save_autoencoder(Autoencoder(**ARGUMENTS), ARGUMENTS, tmp_path / "AE")
    (tmp_path / LATENT_FILE).write_text(json.dumps(latent))
    with pytest.raises(ValueError) as error:
        _latent_generator(None, SimpleNamespace(fold_folder=tmp_path), 1)
    _one_line(error, tmp_path / LATENT_FILE, field)
    assert "train the latent model again" in str(error.value)


@pytest.mark.parametrize("change, field", [
    (lambda d: d.update(threshold="0.5"), "threshold: expected float, got '0.5'"),
    (lambda d: d.update(threshold=math.nan), "threshold: nan is not a finite number"),
    (lambda d: d.update(value=-math.inf), "value: -inf is not a finite number"),
    (lambda d: d.pop("model"), "model: missing"),
    (lambda d: d.update(model=None), "model: expected str, got None"),
    (lambda d: d.update(rule="otsu"), "rule must be one of"),
])
def test_a_broken_threshold_json_names_the_file_and_field(tmp_path, change, field):
    path = tmp_path / "threshold.json"
    ThresholdRecord(0.25, "fpr", 0.01, model="m").save(path)
    _edit(path, change)
    with pytest.raises(ValueError) as error:
        ThresholdRecord.load(path, "m")
    _one_line(error, path, field)
    assert "choose the threshold again" in str(error.value)
