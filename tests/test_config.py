"""nnugen.config: the typed, frozen settings of the plans' ``nnugen`` section and their validation."""

from __future__ import annotations

import dataclasses
import json

import pytest

from nnugen.config import (
    SECTION_VERSION,
    TASK_SECTIONS,
    AnomalySettings,
    AutoencoderSettings,
    ChannelIntensity,
    DenoiserSettings,
    DiffusionSettings,
    GenerationSettings,
    IntensitySettings,
    MemorySettings,
    NnugenSection,
    SamplerSettings,
    TaskSettings,
    TrainingSettings,
    section_of,
)

SECTIONS = (DenoiserSettings, DiffusionSettings, SamplerSettings, TrainingSettings, MemorySettings,
            AutoencoderSettings, AnomalySettings, ChannelIntensity, IntensitySettings, TaskSettings)

ANISOTROPIC = DenoiserSettings(
    features_per_stage=(32, 64, 128, 256, 320, 320, 320),
    kernel_sizes=((1, 3, 3), (1, 3, 3)) + ((3, 3, 3),) * 5,
    strides=((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2)),
    n_conv_per_stage=(2,) * 7, n_conv_per_stage_decoder=(2,) * 6, attention_stages=(6,))


def _full_section() -> NnugenSection:
    """A section with every kind of setting filled in, as the planner writes one."""
    tasks = {
        "segmentation": TaskSettings(denoiser=ANISOTROPIC, diffusion=DiffusionSettings(timesteps=5, model_output="x0"),
                                     sampler=SamplerSettings(name="ddpm", steps=5)),
        "ddpm": TaskSettings(training=TrainingSettings(optimizer="adamw", initial_lr=1e-4, ema_decay=0.999),
                             denoiser=ANISOTROPIC, diffusion=DiffusionSettings(), sampler=SamplerSettings(),
                             generation=GenerationSettings()),
        "autoencoder": TaskSettings(autoencoder=AutoencoderSettings(kind="vq")),
        "anomaly": TaskSettings(denoiser=ANISOTROPIC, diffusion=DiffusionSettings(), sampler=SamplerSettings(),
                                anomaly=AnomalySettings(strengths=(0.5, 1.0))),
        "baseline": TaskSettings(memory=MemorySettings(batch_size=1, grad_accumulation=2,
                                                       activation_checkpointing=True, estimated_gb=6.5)),
    }
    intensity = IntensitySettings(channels=(ChannelIntensity(low=-2.4, high=3.6, mean=412.7, std=171.3),
                                            ChannelIntensity(scheme="CTNormalization", low=-1.0, high=2.0)))
    return NnugenSection(intensity=intensity, tasks=tasks)


# --- defaults and round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", SECTIONS, ids=lambda c: c.__name__)
def test_defaults_are_valid_and_round_trip(cls):
    default = cls()
    assert cls.from_dict(default.to_dict()) == default
    assert cls.from_dict({}) == default
    assert cls.from_dict(None) == default


@pytest.mark.parametrize("cls", SECTIONS, ids=lambda c: c.__name__)
def test_settings_are_frozen(cls):
    setting = cls()
    name = dataclasses.fields(cls)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(setting, name, getattr(setting, name))


def test_full_section_round_trips_through_json():
    section = _full_section()
    data = json.loads(json.dumps(section.to_dict()))
    assert NnugenSection.from_dict(data) == section
    assert NnugenSection.from_dict(data).to_dict() == data
    assert data["version"] == SECTION_VERSION
    assert list(data["tasks"]) == [t for t in TASK_SECTIONS if t in section.tasks]  # fixed order: deterministic files
    assert "denoiser" not in data["tasks"]["baseline"]  # unused sections are left out, not written as null
    assert data["tasks"]["segmentation"]["denoiser"]["strides"][1] == [1, 2, 2]


def test_sampler_spacing_round_trips():
    sampler = SamplerSettings.from_dict({"spacing": "log-snr"})
    assert sampler.spacing == "log-snr" and sampler.to_dict()["spacing"] == "log-snr"


def test_lists_become_tuples_and_ints_become_floats():
    sampler = SamplerSettings.from_dict({"eta": 1})
    assert sampler.eta == 1.0 and isinstance(sampler.eta, float)
    denoiser = DenoiserSettings.from_dict(ANISOTROPIC.to_dict())
    assert denoiser.strides[1] == (1, 2, 2) and isinstance(denoiser.strides, tuple)
    assert denoiser.dimension == 3
    assert hash(denoiser) == hash(ANISOTROPIC)


def test_section_task_and_section_of():
    configuration = {"patch_size": [20, 320, 256], "nnugen": _full_section().to_dict()}
    section = section_of(configuration, "3d_fullres")
    assert section.task("segmentation").sampler.steps == 5
    with pytest.raises(ValueError, match="no settings for task 'ldm'; re-run nnugen_plan"):
        section.task("ldm")


def test_section_of_plain_nnunet_plans_says_run_nnugen_plan():
    with pytest.raises(ValueError, match=r"configuration '3d_fullres' has no nnugen section.*run nnugen_plan -d ID "
                                         r"and train with -p nnugenPlans"):
        section_of({"patch_size": [20, 320, 256], "batch_size": 2}, "3d_fullres")


def test_old_section_version_says_replan():
    with pytest.raises(ValueError, match=r"nnugen\.version: 0 is not supported.*re-run nnugen_plan"):
        NnugenSection.from_dict({"version": 0})


# --- unknown keys and wrong types --------------------------------------------------------------------------------


def test_unknown_key_is_rejected_with_the_valid_keys():
    with pytest.raises(ValueError, match=r"SamplerSettings: unknown key\(s\) stepz; valid keys: eta, mirroring, name, "
                                         r"seeds, shared_first_step, spacing, steps"):
        SamplerSettings.from_dict({"stepz": 3})


def test_unknown_key_deep_in_a_section_is_named_with_its_path():
    data = _full_section().to_dict()
    data["tasks"]["segmentation"]["diffusion"]["timestep"] = 5
    with pytest.raises(ValueError, match=r"3d\.nnugen\.tasks\.segmentation\.diffusion: unknown key\(s\) timestep; "
                                         r"valid keys: .*timesteps"):
        NnugenSection.from_dict(data, "3d.nnugen")


def test_unknown_task_and_section_are_rejected():
    with pytest.raises(ValueError, match=r"unknown task\(s\) segmentaton; valid: segmentation, ddpm"):
        NnugenSection.from_dict({"tasks": {"segmentaton": {}}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) samplers; valid keys: anomaly, autoencoder, denoiser"):
        NnugenSection.from_dict({"tasks": {"segmentation": {"samplers": {}}}})
    with pytest.raises(ValueError, match=r"nnugen: unknown key\(s\) extra"):
        NnugenSection.from_dict({"extra": 1})
    with pytest.raises(ValueError, match="expected a mapping of task name"):
        NnugenSection.from_dict({"tasks": ["segmentation"]})


@pytest.mark.parametrize("cls, data, message", [
    (SamplerSettings, {"steps": True}, r"steps: expected int, got True"),
    (SamplerSettings, {"steps": 2.0}, r"steps: expected int, got 2\.0"),
    (SamplerSettings, {"steps": "5"}, r"steps: expected int, got '5'"),
    (SamplerSettings, {"eta": "0.5"}, r"eta: expected float, got '0\.5'"),
    (SamplerSettings, {"eta": False}, r"eta: expected float, got False"),
    (SamplerSettings, {"name": 3}, r"name: expected str, got 3"),
    (SamplerSettings, {"mirroring": 1}, r"mirroring: expected bool, got 1"),
    (SamplerSettings, {"mirroring": "yes"}, r"mirroring: expected bool"),
    (DiffusionSettings, {"recycling": "true"}, r"recycling: expected bool"),
    (TrainingSettings, {"initial_lr": "1e-4"}, r"initial_lr: expected float, got '1e-4'"),
    (MemorySettings, {"batch_size": None}, r"batch_size: expected int, got None"),
    (AnomalySettings, {"strengths": 0.5}, r"strengths: expected a list, got 0\.5"),
    (AnomalySettings, {"strengths": [0.5, "1"]}, r"strengths\[1\]: expected float, got '1'"),
    (DenoiserSettings, {"strides": [[1, 1, 1], [2, 2, True], [2, 2, 2], [2, 2, 2]]},
     r"strides\[1\]\[2\]: expected int, got True"),
    (TaskSettings, {"sampler": [1, 2]}, r"sampler: expected a mapping, got list"),
    (IntensitySettings, {"channels": [{"low": "0"}]}, r"channels\[0\]\.low: expected float"),
])
def test_wrong_types_are_rejected(cls, data, message):
    with pytest.raises(ValueError, match=message):
        cls.from_dict(data)


def test_optional_section_may_be_null():
    assert TaskSettings.from_dict({"denoiser": None}).denoiser is None


# --- range checks -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls, kwargs, message", [
    (SamplerSettings, {"steps": 0}, r"sampler\.steps: 0 must be >= 1"),
    (SamplerSettings, {"seeds": 0}, r"sampler\.seeds: 0 must be >= 1"),
    (SamplerSettings, {"seeds": -3}, r"sampler\.seeds"),
    (SamplerSettings, {"name": "euler"}, r"sampler\.name: 'euler' is not one of ddpm, ddim, dpm_solver\+\+"),
    (SamplerSettings, {"eta": 1.5}, r"sampler\.eta: 1\.5 must be in \[0\.0, 1\.0\]"),
    (SamplerSettings, {"spacing": "karras"}, r"sampler\.spacing: 'karras' is not one of uniform, trailing, log-snr"),
    (DiffusionSettings, {"schedule": "sigmoid"}, r"diffusion\.schedule: 'sigmoid' is not one of linear, cosine"),
    (DiffusionSettings, {"model_output": "score"}, r"diffusion\.model_output: 'score' is not one of x0, eps, v"),
    (DiffusionSettings, {"timesteps": 0}, r"diffusion\.timesteps"),
    (DiffusionSettings, {"timesteps": 20000}, r"diffusion\.timesteps: 20000 must be in \[1, 10000\]"),
    (DiffusionSettings, {"beta_start": 0.05, "beta_end": 0.02}, r"beta_start: must be smaller than .*beta_end"),
    (DiffusionSettings, {"dice_weight": -1.0}, r"diffusion\.dice_weight"),
    (MemorySettings, {"amp": "fp8"}, r"memory\.amp: 'fp8' is not one of bf16, fp16, fp32"),
    (MemorySettings, {"batch_size": 0}, r"memory\.batch_size"),
    (MemorySettings, {"grad_accumulation": 0}, r"memory\.grad_accumulation"),
    (MemorySettings, {"budget_gb": 0.0}, r"memory\.budget_gb"),
    (TrainingSettings, {"optimizer": "adam"}, r"training\.optimizer: 'adam' is not one of sgd, adamw"),
    (TrainingSettings, {"epochs": 0}, r"training\.epochs"),
    (TrainingSettings, {"ema_decay": 1.0}, r"training\.ema_decay"),
    (TrainingSettings, {"initial_lr": 0.0}, r"training\.initial_lr"),
    (AnomalySettings, {"strengths": (0.0,)}, r"anomaly\.strengths: strength 0\.0 is outside \(0, 1\]"),
    (AnomalySettings, {"strengths": (0.5, 1.01)}, r"anomaly\.strengths: strength 1\.01 is outside \(0, 1\]"),
    (AnomalySettings, {"strengths": (-0.2,)}, r"anomaly\.strengths"),
    (AnomalySettings, {"strengths": ()}, r"anomaly\.strengths: needs at least one strength"),
    (AnomalySettings, {"noise": "perlin"}, r"anomaly\.noise"),
    (AnomalySettings, {"threshold_rule": "otsu"}, r"anomaly\.threshold_rule"),
    (AnomalySettings, {"target_fpr": 2.0}, r"anomaly\.target_fpr"),
    (AutoencoderSettings, {"kind": "vae"}, r"autoencoder\.kind: 'vae' is not one of kl, vq"),
    (AutoencoderSettings, {"latent_channels": 0}, r"autoencoder\.latent_channels"),
    (AutoencoderSettings, {"features_per_stage": (32, 64, 64, 128)}, r"autoencoder\.strides: needs 4 entries"),
    (ChannelIntensity, {"low": 1.0, "high": 1.0}, r"intensity\.channels\.low: low \(1\.0\) must be below high"),
    (ChannelIntensity, {"std": 0.0}, r"intensity\.channels\.std"),
])
def test_out_of_range_values_are_rejected(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)
    with pytest.raises(ValueError, match=message):  # the same check when read from the plans
        cls.from_dict({k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()})


def test_autoencoder_allows_three_downsamplings_not_four():
    three = ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2))
    assert AutoencoderSettings(features_per_stage=(32, 64, 64, 128), strides=three).strides == three
    four = ((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2))
    with pytest.raises(ValueError, match=r"autoencoder\.strides: 4 downsamplings; use at most 3"):
        AutoencoderSettings(features_per_stage=(16, 32, 64, 64, 128), strides=four)


@pytest.mark.parametrize("field, value, message", [
    ("kernel_sizes", ((3, 3, 3),) * 6, r"denoiser\.kernel_sizes: needs 7 entries \(one per stage\), got 6"),
    ("strides", ((1, 1, 1),) * 8, r"denoiser\.strides: needs 7 entries \(one per stage\), got 8"),
    ("n_conv_per_stage", (2,) * 6, r"denoiser\.n_conv_per_stage: needs 7 entries"),
    ("n_conv_per_stage_decoder", (2,) * 7, r"denoiser\.n_conv_per_stage_decoder: needs 6 entries, got 7"),
    ("features_per_stage", (), r"denoiser\.features_per_stage: needs at least one stage"),
    ("kernel_sizes", ((3, 3),) * 7, r"kernel sizes and strides must all have 2 \(2D\) or 3 \(3D\) entries"),
    ("attention_stages", (7,), r"denoiser\.attention_stages: stage 7 does not exist \(0 \.\.\. 6\)"),
    ("attention_stages", (-1,), r"denoiser\.attention_stages: stage -1 does not exist"),
    ("norm", "layer", r"denoiser\.norm: 'layer' is not one of instance, group, batch"),
    ("attention_heads", 0, r"denoiser\.attention_heads"),
    ("dropout", 1.0, r"denoiser\.dropout"),
])
def test_denoiser_lists_must_agree(field, value, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(ANISOTROPIC, **{field: value})


def test_2d_denoiser_and_four_dimensional_kernels():
    flat = DenoiserSettings(features_per_stage=(32, 64), kernel_sizes=((3, 3), (3, 3)), strides=((1, 1), (2, 2)),
                            n_conv_per_stage=(2, 2), n_conv_per_stage_decoder=(2,))
    assert flat.dimension == 2
    with pytest.raises(ValueError, match="2 \\(2D\\) or 3 \\(3D\\)"):
        DenoiserSettings(features_per_stage=(8,), kernel_sizes=((3, 3, 3, 3),), strides=((1, 1, 1, 1),),
                         n_conv_per_stage=(2,), n_conv_per_stage_decoder=())


def test_range_error_read_from_plans_names_where_it_is():
    data = _full_section().to_dict()
    data["tasks"]["anomaly"]["anomaly"]["strengths"] = [0.5, 2.0]
    with pytest.raises(ValueError, match=r"3d_fullres\.nnugen\.tasks\.anomaly\.anomaly: .*strength 2\.0"):
        section_of({"nnugen": data}, "3d_fullres")
