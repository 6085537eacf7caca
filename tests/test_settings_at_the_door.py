"""Settings validated at the door (issue 15, fault 4 and 7): every float setting refuses NaN and Infinity, a wrong JSON
type (a string for a number, a list or null for a mapping) is a one-line ``WHERE.field: what is wrong``
``MalformedFileError`` (a ValueError; the CLIs exit 2), never a TypeError / AttributeError. Random mutations of a
valid section: tests/test_fuzz_settings.py (hypothesis)."""

from __future__ import annotations

import json
import math

import pytest

from nnugen.config import (
    TASK_NEEDS,
    DenoiserSettings,
    DiffusionSettings,
    GenerationSettings,
    NnugenSection,
    SamplerSettings,
    TaskSettings,
    section_of,
)
from nnugen.typed_section import MalformedFileError, check_range

DENOISER = DenoiserSettings(features_per_stage=(8, 16), kernel_sizes=((3, 3),) * 2, strides=((1, 1), (2, 2)),
                            n_conv_per_stage=(1, 1), n_conv_per_stage_decoder=(1,))


def _valid() -> dict:
    """A valid section with every task the planner writes, as JSON data."""
    denoising = {"denoiser": DENOISER, "diffusion": DiffusionSettings(), "sampler": SamplerSettings()}
    tasks = {"segmentation": TaskSettings(**denoising),
             "ddpm": TaskSettings(**denoising, generation=GenerationSettings()),
             "autoencoder": TaskSettings.from_dict({"autoencoder": {}}), "baseline": TaskSettings(),
             "ldm": TaskSettings(**denoising, generation=GenerationSettings(mode="image")),
             "anomaly": TaskSettings.from_dict({**{k: v.to_dict() for k, v in denoising.items()}, "anomaly": {}})}
    return json.loads(json.dumps(NnugenSection(tasks=tasks).to_dict()))


def _parse(section: object):
    """The section read as the trainers read it (a JSON round trip first, as a plans file is), every task asked for."""
    parsed = section_of(json.loads(json.dumps({"nnugen": section})), "3d_fullres")
    return parsed, [parsed.task(name) for name in parsed.tasks]


def _one_line_error(section: object) -> str:
    with pytest.raises(MalformedFileError) as caught:
        _parse(section)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("3d_fullres.nnugen"), message
    return message


@pytest.mark.parametrize("path", [("segmentation", "training", "initial_lr"), ("ddpm", "sampler", "eta"),
                                  ("anomaly", "anomaly", "target_fpr"), ("baseline", "memory", "budget_gb"),
                                  ("ddpm", "generation", "guidance_scale"), ("ldm", "diffusion", "beta_end")])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_in_every_float_field(path, value):
    data = _valid()
    task, section, name = path
    data["tasks"][task][section][name] = value
    message = _one_line_error(data)
    assert f"tasks.{task}.{section}.{name}: {value!r} is not a finite number" in message


def test_nan_is_refused_where_no_range_check_runs():
    """Fields without a range check (the intensity map's mean, a strength) are checked too: once, in the parsing."""
    data = _valid()
    data["intensity"] = {"channels": [{"mean": math.nan}]}
    assert "intensity.channels[0].mean: nan is not a finite number" in _one_line_error(data)
    data = _valid()
    data["tasks"]["anomaly"]["anomaly"]["strengths"] = [0.5, math.nan]
    assert "strengths[1]: nan is not a finite number" in _one_line_error(data)
    with pytest.raises(ValueError, match="training.initial_lr: nan is not a finite number"):
        check_range("training.initial_lr", math.nan, 1e-9, 10.0)


def test_the_parse_cache_does_not_let_nan_through():
    """section_of is memoised on the JSON text, where json.dumps writes NaN as ``NaN``: asked twice, refused twice."""
    data = _valid()
    data["tasks"]["ddpm"]["sampler"]["eta"] = math.nan
    for _ in range(2):
        _one_line_error(data)


@pytest.mark.parametrize("section, message", [
    (None, r"3d_fullres\.nnugen: expected a mapping .*got null; re-run nnugen_plan"),
    ([1, 2], r"3d_fullres\.nnugen: expected a mapping .*got a list"),
    ("x", r"3d_fullres\.nnugen: expected a mapping .*got a string"),
])
def test_a_nnugen_section_that_is_not_a_mapping_is_one_line(section, message):
    with pytest.raises(MalformedFileError, match=message):
        section_of({"nnugen": section}, "3d_fullres")


@pytest.mark.parametrize("change, message", [
    (lambda d: d["tasks"]["segmentation"]["training"].update(initial_lr="0.01"),
     r"tasks\.segmentation\.training\.initial_lr: expected float, got '0\.01'"),
    (lambda d: d["tasks"]["segmentation"]["sampler"].update(steps="5"), r"sampler\.steps: expected int, got '5'"),
    (lambda d: d["tasks"].update(segmentation=None), r"tasks\.segmentation: expected a mapping .*got null"),
    (lambda d: d["tasks"].update(ddpm=[1]), r"tasks\.ddpm: expected a mapping .*got a list"),
    (lambda d: d["tasks"]["ddpm"].update(training=None), r"tasks\.ddpm\.training: expected a mapping, got None"),
    (lambda d: d["tasks"]["ddpm"].update(sampler="ddim"), r"tasks\.ddpm\.sampler: expected a mapping, got str"),
    (lambda d: d.update(tasks=None), r"nnugen\.tasks: expected a mapping"),
    (lambda d: d["tasks"]["ddpm"]["training"].update(initial_lr=10 ** 400), r"initial_lr: 1000.*\.\.\. is too large"),
    (lambda d: d["tasks"]["segmentation"].pop("denoiser"),
     r"tasks\.segmentation: missing denoiser, which task segmentation needs"),
    (lambda d: d["tasks"]["ddpm"].pop("generation"), r"tasks\.ddpm: missing generation"),
])
def test_wrong_json_types_and_missing_sections_are_one_line(change, message):
    data = _valid()
    change(data)
    with pytest.raises(ValueError, match=message):
        _parse(data)
    _one_line_error(data)


def test_every_task_names_the_sections_it_needs():
    parsed, _ = _parse(_valid())
    assert set(TASK_NEEDS) == set(parsed.tasks)
    for name, needs in TASK_NEEDS.items():
        assert all(getattr(parsed.task(name), part) is not None for part in needs), name
