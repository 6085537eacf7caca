"""nnugen_plan's planner: nnUNetPlans.json -> nnugenPlans.json, on hand-written nnU-Net 2.8 plans (conftest)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nnugen.config import TASK_SECTIONS, NnugenSection, section_of
from nnugen.folders.dataset_folders import InputError
from nnugen_planner.memory import UNetShape, estimate_gb, plan_memory
from nnugen_planner.overrides import load_overrides_file, parse_set
from nnugen_planner.planner import PLANNED_KEY, PlanRequest, num_segmentation_heads, plan_dataset

TEMPLATES = sorted((Path(__file__).resolve().parents[2] / "templates").glob("*.yaml"))
DENOISING_TASKS = ("segmentation", "ddpm", "anomaly")
PLANNED_CONFIGURATIONS = ("2d", "3d_lowres", "3d_fullres")


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _plan(dataset: str | int = 901, **kwargs) -> dict:
    return _read(plan_dataset(PlanRequest(dataset=str(dataset), **kwargs)))


def _section(plans: dict, configuration: str = "3d_fullres") -> dict:
    return plans["configurations"][configuration]["nnugen"]


def _task(plans: dict, task: str, configuration: str = "3d_fullres") -> dict:
    return _section(plans, configuration)["tasks"][task]


def _write(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=4) + "\n", encoding="utf-8")


# --- the plan follows nnU-Net's network ----------------------------------------------------------------------------


def test_anisotropic_plan_keeps_strides_and_kernels_in_every_denoiser(fake_preprocessed):
    folder = fake_preprocessed("anisotropic")
    source = _read(folder / "nnUNetPlans.json")["configurations"]["3d_fullres"]
    arch = source["architecture"]["arch_kwargs"]
    plans = _plan()

    configuration = plans["configurations"]["3d_fullres"]
    assert configuration["patch_size"] == [20, 320, 256]
    for task in DENOISING_TASKS:
        denoiser = _task(plans, task)["denoiser"]
        assert denoiser["strides"] == arch["strides"], task
        assert denoiser["kernel_sizes"] == arch["kernel_sizes"], task
        assert denoiser["features_per_stage"] == arch["features_per_stage"], task
        assert denoiser["n_conv_per_stage"] == arch["n_conv_per_stage"], task
        assert denoiser["n_conv_per_stage_decoder"] == arch["n_conv_per_stage_decoder"], task
        assert denoiser["strides"][1] == [1, 2, 2] and denoiser["kernel_sizes"][0] == [1, 3, 3], task
        # segmentation keeps nnU-Net's plain stages; the generative denoisers have residual stages
        assert denoiser["residual_stages"] is (task != "segmentation"), task
        # only segmentation starts from a plain segmentation U-Net (zero weights on the noisy mask and the time)
        assert denoiser["zero_init_conditioning"] is (task == "segmentation"), task
    # anomaly maps average 8 seeds' counterfactuals at one strength, 3 DDIM steps each (the frontier benchmark's choice)
    assert _task(plans, "anomaly")["sampler"]["seeds"] == 8
    assert _task(plans, "anomaly")["sampler"]["steps"] == 3 and _task(plans, "anomaly")["sampler"]["name"] == "ddim"
    assert _task(plans, "anomaly")["anomaly"]["strengths"] == [0.75]
    assert _task(plans, "anomaly")["anomaly"]["seed_average"] == "counterfactual"
    # no erosion of the map's region through 20 slices; the in-plane-only 2d configuration erodes its 2D maps
    assert _task(plans, "anomaly")["anomaly"]["erode_region"] == 0
    assert _task(plans, "anomaly", "2d")["anomaly"]["erode_region"] == min(plans["configurations"]["2d"]
                                                                           ["patch_size"]) // 25 > 0
    # the validation tries erosions up to the shortest extent / 8 (2 through 20 slices), at most 8
    assert _task(plans, "anomaly")["anomaly"]["erode_search"] == 2
    assert _task(plans, "anomaly", "2d")["anomaly"]["erode_search"] == min(
        min(plans["configurations"]["2d"]["patch_size"]) // 8, 8) > 2
    # the autoencoder takes the plan's first (in-plane only) downsamplings; the latent denoiser the remaining stages
    assert _task(plans, "autoencoder")["autoencoder"]["strides"] == [[1, 1, 1], [1, 2, 2], [1, 2, 2]]
    latent = _task(plans, "ldm")["denoiser"]
    assert latent["strides"][1:] == arch["strides"][3:]
    assert latent["kernel_sizes"][1:] == arch["kernel_sizes"][3:]
    # every written section reads back through nnugen.config
    for name in PLANNED_CONFIGURATIONS:
        section = section_of(plans["configurations"][name], name)
        assert set(section.tasks) == set(TASK_SECTIONS)
        for task in DENOISING_TASKS:
            assert section.task(task).denoiser.dimension == len(plans["configurations"][name]["patch_size"])


def test_every_planned_sampler_spaces_its_steps_in_log_snr_and_old_plans_keep_uniform(fake_preprocessed):
    """New plans sample with steps uniform in log-SNR (docs/benchmarks.md, "Sampler step spacing"); a plans file
    written before ``sampler.spacing`` existed samples on the uniform grid it was trained and validated with."""
    from nnugen.config import section_of

    fake_preprocessed("isotropic")
    plans = _plan()
    samplers = [task["sampler"] for task in _section(plans)["tasks"].values() if "sampler" in task]
    assert len(samplers) == 4 and {sampler["spacing"] for sampler in samplers} == {"log-snr"}
    configuration = plans["configurations"]["3d_fullres"]
    del configuration["nnugen"]["tasks"]["segmentation"]["sampler"]["spacing"]
    assert section_of(configuration).task("segmentation").sampler.spacing == "uniform"


def test_segmentation_ensembles_share_their_first_step_and_old_plans_do_not(fake_preprocessed):
    """New plans let the members of a segmentation ensemble share the first call (docs/benchmarks.md, "A shared first
    step"); no other task reads the setting, and a plans file from before it samples every member whole."""
    from nnugen.config import section_of

    fake_preprocessed("isotropic")
    plans = _plan()
    shared = {name: task["sampler"]["shared_first_step"] for name, task in _section(plans)["tasks"].items()
              if "sampler" in task}
    assert shared == {"segmentation": True, "ddpm": False, "ldm": False, "anomaly": False}
    configuration = plans["configurations"]["3d_fullres"]
    sampler = section_of(configuration).task("segmentation").sampler
    assert sampler.name == "ddpm" and sampler.shares_first_step
    del configuration["nnugen"]["tasks"]["segmentation"]["sampler"]["shared_first_step"]
    assert not section_of(configuration).task("segmentation").sampler.shares_first_step


def test_generators_plan_v_prediction_with_min_snr_and_the_anomaly_task_keeps_eps(fake_preprocessed):
    """The objective the 2D generation benchmark chose (docs/benchmarks.md, "Generation quality against compute") for
    ddpm and ldm; the anomaly task keeps the eps-prediction and cosine schedule its benchmarks were measured with."""
    fake_preprocessed("isotropic")
    plans = _plan()
    for task in ("ddpm", "ldm"):
        diffusion = _task(plans, task)["diffusion"]
        assert (diffusion["process"], diffusion["model_output"], diffusion["loss_weighting"]) == ("ddpm", "v",
                                                                                                  "min_snr")
        assert diffusion["min_snr_gamma"] == 5.0
    anomaly = _task(plans, "anomaly")["diffusion"]
    assert (anomaly["model_output"], anomaly["loss_weighting"], anomaly["schedule"]) == ("eps", "uniform", "cosine")


def test_generators_train_without_nnunets_augmentation_and_segmenters_with_it(fake_preprocessed):
    """A generator learns the patches it is shown (docs/benchmarks.md, "Generation quality against compute"); the
    segmenters keep nnU-Net's augmentation, and so does the anomaly task, as its benchmarks were measured."""
    fake_preprocessed("isotropic")
    plans = _plan()
    planned = {task: _task(plans, task)["training"]["augmentation"]
               for task in ("ddpm", "autoencoder", "ldm", "anomaly", "segmentation", "baseline")}
    assert planned == {"ddpm": "none", "autoencoder": "none", "ldm": "none", "anomaly": "nnunet",
                       "segmentation": "nnunet", "baseline": "nnunet"}


def test_2d_configuration_gets_2d_denoisers(fake_preprocessed):
    fake_preprocessed("anisotropic")
    plans = _plan()
    arch = plans["configurations"]["2d"]["architecture"]["arch_kwargs"]
    for task in DENOISING_TASKS:
        assert _task(plans, task, "2d")["denoiser"]["strides"] == arch["strides"]
        assert _task(plans, task, "2d")["denoiser"]["kernel_sizes"] == arch["kernel_sizes"]


def test_copies_every_configuration_and_data_identifier(any_preprocessed):
    source = _read(any_preprocessed / "nnUNetPlans.json")
    target = plan_dataset(PlanRequest(dataset="901"))
    assert target == any_preprocessed / "nnugenPlans.json"
    plans = _read(target)

    assert plans["plans_name"] == "nnugenPlans"
    assert list(plans["configurations"]) == list(source["configurations"])  # nnU-Net's order, cascade included
    for name, configuration in source["configurations"].items():
        copied = {k: v for k, v in plans["configurations"][name].items() if k != "nnugen"}
        assert copied == configuration, name  # data_identifier, next_stage, inherits_from ... unchanged
    assert "nnugen" not in plans["configurations"]["3d_cascade_fullres"]  # inherits 3d_fullres's section
    assert plans["configurations"]["3d_cascade_fullres"] == {"inherits_from": "3d_fullres",
                                                             "previous_stage": "3d_lowres"}
    assert plans["configurations"]["3d_lowres"]["next_stage"] == "3d_cascade_fullres"
    for key, value in source.items():
        if key not in ("plans_name", "configurations"):
            assert plans[key] == value, key
    assert set(plans) == set(source) | {PLANNED_KEY}


def test_nnunet_reads_the_written_plans(fake_preprocessed):
    """nnU-Net's own PlansManager resolves the configurations (the cascade too) and finds the preprocessed data."""
    plans_handler = pytest.importorskip("nnunetv2.utilities.plans_handling.plans_handler")
    fake_preprocessed("anisotropic")
    manager = plans_handler.PlansManager(str(plan_dataset(PlanRequest(dataset="901"))))
    assert manager.plans_name == "nnugenPlans"
    cascade = manager.get_configuration("3d_cascade_fullres")
    assert cascade.data_identifier == "nnUNetPlans_3d_fullres"
    assert cascade.previous_stage_name == "3d_lowres"
    assert list(cascade.patch_size) == [20, 320, 256]
    assert "nnugen" in cascade.configuration  # the cascade inherits 3d_fullres's nnugen section
    assert manager.get_configuration("3d_lowres").data_identifier == "nnUNetPlans_3d_lowres"


def test_dataset_can_be_named_by_id_or_full_name(fake_preprocessed):
    fake_preprocessed("isotropic", dataset_id=7, name="Small")
    by_id = plan_dataset(PlanRequest(dataset="7")).read_bytes()
    assert plan_dataset(PlanRequest(dataset="007")).read_bytes() == by_id
    assert plan_dataset(PlanRequest(dataset="Dataset007_Small")).read_bytes() == by_id


def test_segmentation_heads_count_labels_or_regions():
    assert num_segmentation_heads({"labels": {"background": 0, "a": 1, "b": 2}}) == 3
    regions = {"labels": {"background": 0, "whole": [1, 2], "core": 2}, "regions_class_order": [1, 2]}
    assert num_segmentation_heads(regions) == 2


def test_plans_without_arch_kwargs_are_rejected(fake_preprocessed):
    def old_plans(plans):
        plans["configurations"]["3d_fullres"]["architecture"] = {"network_class_name": "PlainConvUNet"}

    folder = fake_preprocessed("isotropic", edit=old_plans)
    with pytest.raises(InputError, match="arch_kwargs.*nnUNetv2_plan_and_preprocess"):
        plan_dataset(PlanRequest(dataset="901"))
    assert not (folder / "nnugenPlans.json").exists()


# --- memory ----------------------------------------------------------------------------------------------------------


def _memory(budget: float) -> dict:
    plans = _plan(configurations=("3d_fullres",), gpu_memory_gb=budget, overwrite=True)
    return {task: _task(plans, task)["memory"] for task in TASK_SECTIONS}


def test_smaller_budget_lowers_batch_or_checkpoints(fake_preprocessed):
    fake_preprocessed("anisotropic")
    nnunet_batch = 2
    roomy, default, tight = _memory(40), _memory(8), _memory(5)

    seg = [plan["segmentation"] for plan in (roomy, default, tight)]
    assert (seg[0]["batch_size"], seg[0]["grad_accumulation"], seg[0]["activation_checkpointing"]) == (2, 1, False)
    assert (seg[1]["batch_size"], seg[1]["grad_accumulation"], seg[1]["activation_checkpointing"]) == (2, 1, True)
    assert (seg[2]["batch_size"], seg[2]["grad_accumulation"], seg[2]["activation_checkpointing"]) == (1, 2, True)
    for budget, plan in zip((40, 8, 5), (roomy, default, tight)):
        for task, memory in plan.items():
            assert memory["budget_gb"] == budget
            assert memory["estimated_gb"] <= budget, (budget, task)
            assert memory["batch_size"] * memory["grad_accumulation"] >= nnunet_batch, (budget, task)
    for task in TASK_SECTIONS:  # a smaller budget never gives a bigger batch or drops checkpointing
        batches = [plan[task]["batch_size"] for plan in (roomy, default, tight)]
        accumulation = [plan[task]["grad_accumulation"] for plan in (roomy, default, tight)]
        checkpointing = [plan[task]["activation_checkpointing"] for plan in (roomy, default, tight)]
        assert batches == sorted(batches, reverse=True), task
        assert accumulation == sorted(accumulation), task
        assert checkpointing == sorted(checkpointing), task


@pytest.mark.parametrize("variant, budget", [("anisotropic", 1.5), ("isotropic", 0.9)])
def test_budget_too_small_for_batch_one_names_the_flag_and_writes_nothing(fake_preprocessed, variant, budget):
    folder = fake_preprocessed(variant)
    with pytest.raises(InputError, match="--gpu-memory-gb"):
        plan_dataset(PlanRequest(dataset="901", gpu_memory_gb=budget))
    assert not (folder / "nnugenPlans.json").exists()
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def test_failed_replan_leaves_the_existing_file_untouched(fake_preprocessed):
    folder = fake_preprocessed("anisotropic")
    before = plan_dataset(PlanRequest(dataset="901")).read_bytes()
    with pytest.raises(InputError, match="--gpu-memory-gb"):
        plan_dataset(PlanRequest(dataset="901", gpu_memory_gb=1.5, overwrite=True))
    with pytest.raises(InputError, match="--gpu-memory-gb"):
        plan_dataset(PlanRequest(dataset="901", gpu_memory_gb=0))
    assert (folder / "nnugenPlans.json").read_bytes() == before


SHAPE_3D = UNetShape(in_channels=4, out_channels=3, patch_size=(20, 320, 256),
                     features_per_stage=(32, 64, 128, 256, 320, 320, 320),
                     kernel_sizes=((1, 3, 3), (1, 3, 3)) + ((3, 3, 3),) * 5,
                     strides=((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2)),
                     n_conv_per_stage=(2,) * 7, n_conv_per_stage_decoder=(2,) * 6)


def _with_patch(shape: UNetShape, patch: tuple[int, ...]) -> UNetShape:
    return UNetShape(shape.in_channels, shape.out_channels, patch, shape.features_per_stage, shape.kernel_sizes,
                     shape.strides, shape.n_conv_per_stage, shape.n_conv_per_stage_decoder)


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("amp", ["bf16", "fp32"])
def test_memory_estimate_grows_with_batch_and_patch(checkpointing, amp):
    by_batch = [estimate_gb(SHAPE_3D, batch, amp, checkpointing) for batch in range(1, 6)]
    assert all(a < b for a, b in zip(by_batch, by_batch[1:]))
    patches = [(8, 128, 128), (16, 192, 160), (20, 320, 256), (32, 320, 320), (40, 384, 384)]
    by_patch = [estimate_gb(_with_patch(SHAPE_3D, p), 2, amp, checkpointing) for p in patches]
    assert all(a < b for a, b in zip(by_patch, by_patch[1:]))


def test_memory_estimate_checkpointing_and_amp_save_memory():
    assert estimate_gb(SHAPE_3D, 2, "bf16", True) < estimate_gb(SHAPE_3D, 2, "bf16", False)
    assert estimate_gb(SHAPE_3D, 2, "bf16", False) < estimate_gb(SHAPE_3D, 2, "fp32", False)


@pytest.mark.parametrize("budget", [4.5, 5, 6, 8, 12, 16, 40, 80])
def test_memory_plan_fits_the_budget_and_keeps_the_effective_batch(budget):
    plan = plan_memory(SHAPE_3D, 2, budget)
    assert plan.estimated_gb <= budget
    assert plan.batch_size * plan.grad_accumulation >= 2
    assert plan.estimated_gb == round(estimate_gb(SHAPE_3D, plan.batch_size, plan.amp,
                                                  plan.activation_checkpointing), 2)


# --- determinism and user edits -----------------------------------------------------------------------------------


def test_planning_is_deterministic(any_preprocessed):
    first = plan_dataset(PlanRequest(dataset="901")).read_bytes()
    again = plan_dataset(PlanRequest(dataset="901")).read_bytes()  # re-plan over its own output
    fresh = plan_dataset(PlanRequest(dataset="901", overwrite=True)).read_bytes()
    assert first == again == fresh


def test_user_edits_survive_a_replan_until_overwrite(fake_preprocessed):
    folder = fake_preprocessed("anisotropic")
    target = plan_dataset(PlanRequest(dataset="901"))
    plans = _read(target)
    assert _task(plans, "segmentation")["sampler"]["steps"] == 5
    _task(plans, "segmentation")["sampler"]["steps"] = 9
    plans["configurations"]["3d_fullres_custom"] = {"inherits_from": "3d_fullres", "batch_size": 1}
    _write(target, plans)

    replanned = _plan()
    assert _task(replanned, "segmentation")["sampler"]["steps"] == 9
    assert _task(replanned, "segmentation", "2d")["sampler"]["steps"] == 5  # other configurations untouched
    assert _task(replanned, "ddpm")["sampler"]["steps"] == 20
    assert replanned["configurations"]["3d_fullres_custom"] == {"inherits_from": "3d_fullres", "batch_size": 1}

    before = _task(replanned, "segmentation")["memory"]
    tight = _plan(gpu_memory_gb=5)
    after = _task(tight, "segmentation")["memory"]
    assert after["budget_gb"] == 5 and before["budget_gb"] == 8
    assert (after["batch_size"], after["grad_accumulation"]) == (1, 2)
    assert after["estimated_gb"] != before["estimated_gb"]
    assert _task(tight, "segmentation")["sampler"]["steps"] == 9  # the edit stays

    fresh = _plan(overwrite=True)
    assert _task(fresh, "segmentation")["sampler"]["steps"] == 5
    assert "3d_fullres_custom" not in fresh["configurations"]
    assert (folder / "nnugenPlans.json").is_file()


def test_edited_memory_value_survives_a_budget_change(fake_preprocessed):
    fake_preprocessed("anisotropic")
    target = plan_dataset(PlanRequest(dataset="901"))
    plans = _read(target)
    _task(plans, "segmentation")["memory"]["amp"] = "fp32"
    _write(target, plans)
    replanned = _plan(gpu_memory_gb=40)
    assert _task(replanned, "segmentation")["memory"]["amp"] == "fp32"
    assert _task(replanned, "segmentation")["memory"]["budget_gb"] == 40
    assert _task(replanned, "ddpm")["memory"]["amp"] == "bf16"


def test_invalid_hand_edit_is_reported_on_replan(fake_preprocessed):
    folder = fake_preprocessed("isotropic")
    target = plan_dataset(PlanRequest(dataset="901"))
    plans = _read(target)
    _task(plans, "segmentation")["sampler"]["steps"] = 0
    _write(target, plans)
    edited = target.read_bytes()
    with pytest.raises(ValueError, match=r"3d_fullres\.nnugen\.tasks\.segmentation\.sampler: sampler\.steps: 0"):
        plan_dataset(PlanRequest(dataset="901"))
    assert target.read_bytes() == edited
    assert _task(_plan(overwrite=True), "segmentation")["sampler"]["steps"] == 5
    assert (folder / "nnugenPlans.json").is_file()


def test_malformed_existing_nnugen_plans_is_named_unless_overwrite(fake_preprocessed):
    folder = fake_preprocessed("isotropic")
    (folder / "nnugenPlans.json").write_text('{"configurations": ', encoding="utf-8")
    with pytest.raises(InputError, match="nnugenPlans.json is not valid JSON"):
        plan_dataset(PlanRequest(dataset="901"))
    assert _plan(overwrite=True)["plans_name"] == "nnugenPlans"


# --- --set and --overrides ---------------------------------------------------------------------------------------


def test_set_applies_to_every_configuration_and_survives_replans(fake_preprocessed):
    fake_preprocessed("anisotropic")
    plans = _plan(sets=("segmentation.sampler.steps=3", "ddpm.training.initial_lr=1e-4",
                        "anomaly.anomaly.strengths=[0.5, 1.0]", "segmentation.sampler.mirroring=true"))
    for name in PLANNED_CONFIGURATIONS:
        assert _task(plans, "segmentation", name)["sampler"]["steps"] == 3
        assert _task(plans, "segmentation", name)["sampler"]["mirroring"] is True
        assert _task(plans, "ddpm", name)["training"]["initial_lr"] == 1e-4
        assert _task(plans, "anomaly", name)["anomaly"]["strengths"] == [0.5, 1.0]
        assert _task(plans, "anomaly", name)["sampler"]["steps"] == 3
    assert _task(_plan(), "segmentation")["sampler"]["steps"] == 3  # a --set is an edit: kept by later runs


def test_set_accepts_exponent_floats():
    assert parse_set("ddpm.diffusion.beta_start=1e-4") == {"tasks": {"ddpm": {"diffusion": {"beta_start": 1e-4}}}}
    assert parse_set("autoencoder.autoencoder.kl_weight=1.0e-6")["tasks"]["autoencoder"]["autoencoder"] == {
        "kl_weight": 1e-6}


@pytest.mark.parametrize("assignment, message", [
    ("segmentation.sampler.stepz=3", r"segmentation\.sampler: unknown key\(s\) stepz; valid keys: .*steps"),
    ("segmentation.samplr.steps=3", r"unknown key\(s\) samplr; valid keys: .*sampler"),
    ("segmentaton.sampler.steps=3", r"segmentaton.*must start with one of segmentation"),
    ("segmentation.sampler.steps=abc", r"segmentation\.sampler\.steps: expected int, got 'abc'"),
    ("segmentation.sampler.steps=2.5", r"segmentation\.sampler\.steps: expected int"),
    ("segmentation.sampler.mirroring=1", r"segmentation\.sampler\.mirroring: expected bool"),
    ("ddpm.training.initial_lr=fast", r"ddpm\.training\.initial_lr: expected float"),
    ("segmentation.sampler.steps=0", r"tasks\.segmentation\.sampler: sampler\.steps: 0 must be >= 1"),
    ("segmentation.sampler.name=euler", r"sampler\.name: 'euler' is not one of ddpm, ddim, dpm_solver\+\+"),
    ("anomaly.anomaly.strengths=[0.5, 1.5]", r"anomaly\.strengths: strength 1\.5 is outside \(0, 1\]"),
    ("segmentation.sampler.steps", r"expected KEY=VALUE"),
    ("segmentation=3", r"must start with one of .* and name a field"),
    ("segmentation.sampler.steps=[1, ", r"not a valid YAML"),
])
def test_set_is_validated_and_nothing_is_written(fake_preprocessed, assignment, message):
    folder = fake_preprocessed("isotropic")
    with pytest.raises(ValueError, match=message):
        plan_dataset(PlanRequest(dataset="901", sets=(assignment,)))
    assert not (folder / "nnugenPlans.json").exists()


def test_overrides_file_global_and_per_configuration(fake_preprocessed, tmp_path):
    fake_preprocessed("anisotropic")
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(
        "segmentation:\n"
        "  sampler: {steps: 4, seeds: 3}\n"
        "ddpm:\n"
        "  training:\n"
        "    initial_lr: 2e-4\n"
        "configurations:\n"
        "  3d_fullres:\n"
        "    segmentation:\n"
        "      sampler: {seeds: 7}\n"
        "  3d:\n"
        "    anomaly:\n"
        "      anomaly: {strengths: [0.4]}\n", encoding="utf-8")
    plans = _plan(overrides_file=overrides)
    assert _task(plans, "segmentation")["sampler"] == {**_task(plans, "segmentation", "2d")["sampler"], "seeds": 7}
    for name in ("2d", "3d_lowres"):
        assert _task(plans, "segmentation", name)["sampler"]["steps"] == 4
        assert _task(plans, "segmentation", name)["sampler"]["seeds"] == 3
        assert _task(plans, "anomaly", name)["anomaly"]["strengths"] == [0.75]  # the plan's, untouched
    assert _task(plans, "segmentation")["sampler"]["steps"] == 4
    assert _task(plans, "anomaly")["anomaly"]["strengths"] == [0.4]  # "3d" is 3d_fullres
    assert _task(plans, "ddpm", "2d")["training"]["initial_lr"] == 2e-4


@pytest.mark.parametrize("text, message", [
    ("segmentation:\n  sampler: {stepz: 4}\n", r"unknown key\(s\) stepz"),
    ("segmentation:\n  sampler: {steps: -1}\n", r"sampler\.steps: -1 must be >= 1"),
    ("sampler:\n  steps: 4\n", r"unknown top-level key\(s\) sampler"),
    ("configurations:\n  3d_highres:\n    segmentation: {sampler: {steps: 4}}\n",
     r"unknown configuration '3d_highres'"),
    ("segmentation: [1, 2\n", r"is not valid YAML"),
    ("- segmentation\n", r"expected a mapping"),
])
def test_bad_overrides_file_is_reported_and_nothing_is_written(fake_preprocessed, tmp_path, text, message):
    folder = fake_preprocessed("isotropic")
    overrides = tmp_path / "bad.yaml"
    overrides.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        plan_dataset(PlanRequest(dataset="901", overrides_file=overrides))
    with pytest.raises(InputError, match="no such file"):
        plan_dataset(PlanRequest(dataset="901", overrides_file=tmp_path / "missing.yaml"))
    assert not (folder / "nnugenPlans.json").exists()


def _leaves(tree: dict, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], object]]:
    leaves = []
    for key, value in tree.items():
        if isinstance(value, dict):
            leaves += _leaves(value, (*prefix, key))
        else:
            leaves.append(((*prefix, key), value))
    return leaves


def test_there_are_templates():
    assert {p.name for p in TEMPLATES} >= {"segmentation_overrides.yaml", "generation_overrides.yaml",
                                           "memory_overrides.yaml"}


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_template_applies_cleanly(any_preprocessed, template):
    """Every key of each shipped template is valid, lands in every planned configuration, and (as the templates
    say) applied as is they change nothing."""
    everywhere, per_configuration = load_overrides_file(template)
    assert everywhere, f"{template.name} sets nothing"
    planned = _plan()
    with_template = _plan(overrides_file=template, overwrite=True)
    for name in PLANNED_CONFIGURATIONS:
        section = _section(with_template, name)
        NnugenSection.from_dict(section)
        for path, value in _leaves(everywhere):
            node = section
            for key in path:
                node = node[key]
            expected = value if not isinstance(value, tuple) else list(value)
            assert node == expected, (name, path)
    assert with_template == planned


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_commented_per_configuration_example_applies_cleanly(any_preprocessed, template, tmp_path):
    """Each template ends with a commented ``configurations:`` example; uncommented, it is valid too."""
    lines = template.read_text(encoding="utf-8").splitlines()
    start = lines.index("# configurations:")
    example = [line[2:] if line.startswith("# ") else line.lstrip("#")
               for line in lines[start:] if line.startswith("#")]
    uncommented = tmp_path / template.name
    uncommented.write_text("\n".join(example) + "\n", encoding="utf-8")
    everywhere, per_configuration = load_overrides_file(uncommented)
    assert everywhere == {} and len(per_configuration) == 1
    (name, overrides), = per_configuration.items()
    plans = _plan(overrides_file=uncommented)
    for path, value in _leaves(overrides):
        node = _section(plans, name)
        for key in path:
            node = node[key]
        assert node == value, path


def test_configuration_alias_and_subset(fake_preprocessed):
    fake_preprocessed("isotropic")
    plans = _plan(configurations=("3d",))
    assert "nnugen" in plans["configurations"]["3d_fullres"]
    assert all("nnugen" not in plans["configurations"][name] for name in ("2d", "3d_lowres", "3d_cascade_fullres"))
    assert set(plans[PLANNED_KEY]) == {"3d_fullres"}
    both = _plan(configurations=("2d",))  # a later run adds 2d and keeps 3d_fullres
    assert "nnugen" in both["configurations"]["2d"] and "nnugen" in both["configurations"]["3d_fullres"]
    assert set(both[PLANNED_KEY]) == {"2d", "3d_fullres"}


@pytest.mark.parametrize("name", ["3d_highres", "4d"])
def test_unknown_configuration_lists_the_available_ones(fake_preprocessed, name):
    folder = fake_preprocessed("isotropic")
    with pytest.raises(InputError, match=f"unknown configuration '{name}'; this plan has 2d, 3d_lowres, 3d_fullres"):
        plan_dataset(PlanRequest(dataset="901", configurations=(name,)))
    assert not (folder / "nnugenPlans.json").exists()


@pytest.mark.parametrize("missing", ["nnUNetPlans.json", "dataset.json", "dataset_fingerprint.json"])
def test_missing_input_file_says_to_run_nnunet_planning(fake_preprocessed, missing):
    folder = fake_preprocessed("isotropic")
    (folder / missing).unlink()
    with pytest.raises(InputError, match=f"{missing} is missing; run nnUNetv2_plan_and_preprocess -d 901 first"):
        plan_dataset(PlanRequest(dataset="901"))
    assert not (folder / "nnugenPlans.json").exists()


# --- what the memory plan counts besides the U-Net ------------------------------------------------------------------


@pytest.mark.parametrize("patch, layers", [((64, 64), 3), ((24, 48, 40), 2)])
def test_discriminator_count_is_monais_patchgan(patch, layers):
    from nnugen.networks.patch_discriminator import make_patch_discriminator
    from nnugen_planner.memory import discriminator_extras

    network = make_patch_discriminator(2, len(patch), num_layers=layers, patch_size=patch)
    conv_weights = sum(p.numel() for p in network.parameters() if p.ndim > 1)
    assert discriminator_extras(2, patch, layers).trained_parameters == conv_weights


def test_perceptual_encoder_count_is_nnunets_encoder():
    from dynamic_network_architectures.architectures.unet import PlainConvUNet
    from torch import nn

    from nnugen_planner.memory import encoder_parameter_count

    shape = UNetShape(in_channels=2, out_channels=3, patch_size=(32, 32, 32), features_per_stage=(8, 16, 32),
                      kernel_sizes=((3, 3, 3),) * 3, strides=((1, 1, 1), (2, 2, 2), (2, 2, 2)),
                      n_conv_per_stage=(2, 2, 2), n_conv_per_stage_decoder=(2, 2))
    network = PlainConvUNet(2, 3, shape.features_per_stage, nn.Conv3d, shape.kernel_sizes, shape.strides,
                            shape.n_conv_per_stage, 3, shape.n_conv_per_stage_decoder, conv_bias=False)
    conv_weights = sum(p.numel() for p in network.encoder.parameters() if p.ndim > 1)
    assert encoder_parameter_count(shape) == conv_weights


def test_a_generator_plans_for_its_ema_copy(fake_preprocessed):
    from nnugen_planner.memory import TrainingExtras, parameter_count

    fake_preprocessed("anisotropic")
    plans = _plan(configurations=("3d_fullres",), gpu_memory_gb=40, overwrite=True)
    ddpm = _task(plans, "ddpm")
    denoiser, memory = ddpm["denoiser"], ddpm["memory"]
    channels = 1 + 3  # the image and the 3-class one-hot, generated together
    shape = UNetShape(channels, channels, tuple(plans["configurations"]["3d_fullres"]["patch_size"]),
                      denoiser["features_per_stage"], denoiser["kernel_sizes"], denoiser["strides"],
                      denoiser["n_conv_per_stage"], denoiser["n_conv_per_stage_decoder"])
    args = shape, memory["batch_size"], memory["amp"], memory["activation_checkpointing"]
    with_ema = estimate_gb(*args, TrainingExtras(frozen_parameters=parameter_count(shape)))
    assert memory["estimated_gb"] == round(with_ema, 2)
    assert with_ema - estimate_gb(*args) == pytest.approx(4 * parameter_count(shape) / 1024**3)
