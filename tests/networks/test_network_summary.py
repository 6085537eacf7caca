"""The torchinfo network summary of each planned task (meta-device dry run) against the real network on the CPU:
parameter counts equal sum(p.numel()), stage output shapes equal those of a real forward pass, 2D and 3D plans."""

from __future__ import annotations

import json

import torch
from nnugen.entrypoints.plan import main as plan_main

from nnugen.config import section_of
from nnugen.models.model_builders import ModelSpec, build_model
from nnugen.models.model_summary import _summarised, log_task_summary, plan_summaries, plan_task_summary
from nnugen.networks.network_summary import network_summary, stage_modules


def _real_shapes(network: torch.nn.Module, inputs: list[torch.Tensor]) -> list[tuple[str, tuple[int, ...]]]:
    """(stage, output shape) of each stage's first call in a real forward pass, recorded by forward hooks."""
    shapes: dict[str, tuple[int, ...]] = {}

    def recorder(name: str):
        def record(module, args, output) -> None:
            shapes.setdefault(name, tuple((output[0] if isinstance(output, tuple) else output).shape))
        return record

    hooks = [module.register_forward_hook(recorder(name)) for name, module in stage_modules(network)]
    with torch.no_grad():
        network(*inputs)
    for hook in hooks:
        hook.remove()
    return [(name, shapes[name]) for name, _ in stage_modules(network)]


def test_nnugen_plan_summary_prints_each_tasks_network_and_it_matches_the_real_network(fake_preprocessed, capsys):
    """One plan (planning is the slow part), its 2d and 3d_fullres segmentation denoiser and autoencoder checked."""
    folder = fake_preprocessed()
    assert plan_main(["-d", "901", "-c", "2d", "3d_fullres", "--no-check"]) == 0
    assert "TimeConditionedUNet" not in capsys.readouterr().out  # planning alone stays torch-free
    assert plan_main(["-d", "901", "-c", "2d", "3d_fullres", "--no-check", "--summary"]) == 0
    printed = capsys.readouterr().out
    plans = json.loads((folder / "nnugenPlans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    rows = plan_summaries(plans, dataset_json)
    assert {(c, t) for c, t, _ in rows} >= {(c, t) for c in ("2d", "3d_fullres")
                                             for t in ("segmentation", "autoencoder", "anomaly")}
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    plan_task_summary(plans, dataset_json, "2d", "segmentation")
    assert torch.equal(torch.random.get_rng_state(), before)  # a seeded training is the same with the summary logged
    nothing: list[str] = []
    log_task_summary(nothing.append, plans, dataset_json, "2d", "baseline")  # nnU-Net's own network: not nnugen's
    assert nothing == []
    for configuration, task, summary in rows:
        assert f"nnugen_plan: {configuration} {task}: {summary.lines()[0]}" in printed
        logged: list[str] = []
        log_task_summary(logged.append, plans, dataset_json, configuration, task)  # what the trainers log
        assert logged == summary.lines()
        if task in ("segmentation", "autoencoder") and configuration in ("2d", "3d_fullres"):
            _check_against_the_real_network(plans, dataset_json, configuration, task, summary)


def _check_against_the_real_network(plans: dict, dataset_json: dict, configuration: str, task: str, summary) -> None:
    section = section_of(plans["configurations"][configuration], configuration)
    patch = tuple(plans["configurations"][configuration]["patch_size"])
    settings = section.task(task)
    spec = ModelSpec(settings, section, len(dataset_json["channel_names"]), len(dataset_json["labels"]), patch)
    torch.manual_seed(0)
    network, network_patch, timed = _summarised(build_model(task, spec), patch)
    assert summary.total_parameters == sum(p.numel() for p in network.parameters())
    assert summary.trainable_parameters == sum(p.numel() for p in network.parameters() if p.requires_grad)
    batch = settings.memory.batch_size
    assert summary.input_shapes[0] == (batch, network.in_channels, *network_patch)
    inputs = [torch.randn(1, network.in_channels, *network_patch)] + ([torch.tensor([3.0])] if timed else [])
    real = _real_shapes(network.eval(), inputs)
    assert [(name, (batch, *shape[1:])) for name, shape in real] == list(summary.stage_shapes)
    assert len(summary.stage_shapes) == len(stage_modules(network)) >= 2
    assert summary == plan_task_summary(plans, dataset_json, configuration, task)
    # torchinfo's activation estimate scales with the batch: the same network at batch 1 has 1 / batch of it
    assert network_summary(network, inputs).activation_bytes * batch == summary.activation_bytes
