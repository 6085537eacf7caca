"""The weights-only export of a DDPM's denoiser, the base a label adapter loads: round trip, one-line errors for a
missing or mismatched base, and refusal of a file that would need unsafe unpickling."""

import pickle
from pathlib import Path

import pytest
import torch

from nnugen.config import DenoiserSettings, DiffusionSettings, TaskSettings
from nnugen.models.denoiser_files import (
    WEIGHTS_FILE,
    base_model_folder,
    denoiser_description,
    load_denoiser_weights,
    save_denoiser,
)

SETTINGS = TaskSettings(denoiser=DenoiserSettings(features_per_stage=(8, 16), kernel_sizes=((3, 3),) * 2,
                                                  strides=((1, 1), (2, 2)), n_conv_per_stage=(1, 1),
                                                  n_conv_per_stage_decoder=(1,)),
                        diffusion=DiffusionSettings())


def _export(folder: Path, mode: str = "image", settings: TaskSettings = SETTINGS) -> dict:
    module = torch.nn.Conv2d(1, 2, 3)
    save_denoiser(module, denoiser_description(settings, 1, mode), folder)
    return module.state_dict()


def test_round_trip_gives_the_weights_back(tmp_path):
    state = _export(tmp_path)
    loaded = load_denoiser_weights(tmp_path, denoiser_description(SETTINGS, 1, "image"))
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)


def test_a_missing_base_says_how_to_train_it(tmp_path):
    with pytest.raises(ValueError, match=r"holds no exported DDPM .*ddpm.generation.mode=image"):
        load_denoiser_weights(tmp_path, denoiser_description(SETTINGS, 1, "image"))


@pytest.mark.parametrize("change, key", [
    ({"mode": "joint"}, "mode"),
    ({"image_channels": 2}, "image_channels"),
    ({"features": (8, 32)}, "denoiser.features_per_stage"),
    ({"timesteps": 500}, "diffusion.timesteps"),
])
def test_a_mismatched_base_names_the_first_difference(tmp_path, change, key):
    settings = SETTINGS
    if "features" in change:
        settings = TaskSettings(denoiser=DenoiserSettings(**{**SETTINGS.denoiser.to_dict(),
                                                             "features_per_stage": change["features"]}),
                                diffusion=SETTINGS.diffusion)
    if "timesteps" in change:
        settings = TaskSettings(denoiser=SETTINGS.denoiser, diffusion=DiffusionSettings(timesteps=change["timesteps"]))
    _export(tmp_path, change.get("mode", "image"), settings)
    expected = denoiser_description(SETTINGS, change.get("image_channels", 1), "image")
    with pytest.raises(ValueError, match=rf"does not match these plans \({key}: "):
        load_denoiser_weights(tmp_path, expected)


def test_a_file_that_needs_unpickling_is_refused_without_running_it(tmp_path):
    _export(tmp_path)

    class Exploit:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    with open(tmp_path / WEIGHTS_FILE, "wb") as stream:
        pickle.dump({"weight": Exploit()}, stream)
    with pytest.raises(ValueError, match="refused to load"):
        load_denoiser_weights(tmp_path, denoiser_description(SETTINGS, 1, "image"))
    assert not (tmp_path / "pwned").exists()


def test_base_model_folder_default_and_explicit(tmp_path):
    default = base_model_folder("", tmp_path, "Dataset001_X", "nnugenPlans", "2d", 0)
    assert default == tmp_path / "Dataset001_X" / "NnugenDDPMTrainer__nnugenPlans__2d" / "fold_0"
    model = tmp_path / "model"
    assert base_model_folder(str(model), tmp_path, "D", "P", "2d", 1) == model / "fold_1"
    (model / "fold_3").mkdir(parents=True)
    _export(model / "fold_3")
    assert base_model_folder(str(model / "fold_3"), tmp_path, "D", "P", "2d", 1) == model / "fold_3"
