"""The planner's cost model (nnugen_planner/time_estimate.py) and the training times nnugen_plan prints
(nnugen_planner/planned_time.py), on tiny networks and the hand-written nnU-Net plans of conftest."""

from __future__ import annotations

import json
import re

import pytest

from nnugen.config import NnugenSection
from nnugen_planner.memory import TrainingExtras, UNetShape, estimate_gb, parameter_count
from nnugen_planner.planned_time import planned_times, task_network
from nnugen_planner.planner import PlanRequest, plan_dataset
from nnugen_planner.time_estimate import (
    CPU_THROUGHPUT,
    GPU_THROUGHPUT,
    Throughput,
    attention_macs,
    conv_layers,
    discriminator_macs,
    forward_macs,
    passes_per_step,
    readable_duration,
    seconds_per_iteration,
    training_seconds,
)

TINY_2D = UNetShape(in_channels=1, out_channels=2, patch_size=(8, 8), features_per_stage=(4, 8),
                    kernel_sizes=((3, 3), (3, 3)), strides=((1, 1), (2, 2)), n_conv_per_stage=(1, 1),
                    n_conv_per_stage_decoder=(1,))


def test_macs_of_a_tiny_unet_match_a_hand_count():
    # encoder 0: 3x3 conv 1 -> 4 at 8x8; encoder 1: 3x3 conv 4 -> 8 at 4x4; decoder: 2x2 transposed conv 8 -> 4 at
    # 8x8, then 3x3 conv of the concatenation 8 -> 4 at 8x8; head: 1x1 conv 4 -> 2 at 8x8
    hand = 9 * 1 * 4 * 64 + 9 * 4 * 8 * 16 + 8 * 4 * 64 + 9 * 8 * 4 * 64 + 4 * 2 * 64
    assert hand == 27904
    assert forward_macs(TINY_2D) == hand
    # residual shortcuts: encoder 0 widens 1 -> 4 (1x1 at 8x8), encoder 1 widens 4 -> 8 (at 4x4), decoder 8 -> 4
    assert forward_macs(TINY_2D, residual_stages=True) == hand + 1 * 4 * 64 + 4 * 8 * 16 + 8 * 4 * 64


def test_attention_macs_match_a_hand_count():
    # attention at the bottleneck (4x4 = 16 positions, 8 channels): one block, projections 4 N C^2 + scores 2 N^2 C
    assert attention_macs(TINY_2D, (1,)) == 4 * 16 * 8 * 8 + 2 * 16 * 16 * 8
    # at full resolution the decoder stage gets a block too
    assert attention_macs(TINY_2D, (0,)) == 2 * (4 * 64 * 4 * 4 + 2 * 64 * 64 * 4)
    assert forward_macs(TINY_2D, (1,)) == forward_macs(TINY_2D) + attention_macs(TINY_2D, (1,))


def test_the_layers_hold_the_memory_plans_parameter_count():
    shape = UNetShape(2, 3, (16, 32, 32), (8, 16, 32), ((1, 3, 3), (3, 3, 3), (3, 3, 3)),
                      ((1, 1, 1), (1, 2, 2), (2, 2, 2)), (2, 2, 2), (2, 2))
    assert sum(layer.weights for layer in conv_layers(shape)) == parameter_count(shape)


def test_decoder_conv_counts_run_from_the_bottleneck_up_in_both_models():
    # nnU-Net's n_conv_per_stage_decoder[0] is the stage just above the bottleneck: with (3, 1) the level-1 decoder
    # stage (16 features) has 3 convs and the full-resolution one (8 features) 1, so the count differs from (1, 3)
    def shape(decoder):
        return UNetShape(1, 2, (16, 16), (8, 16, 32), ((3, 3),) * 3, ((1, 1), (2, 2), (2, 2)), (1, 1, 1), decoder)

    for decoder in ((3, 1), (1, 3)):
        assert sum(layer.weights for layer in conv_layers(shape(decoder))) == parameter_count(shape(decoder))
    assert parameter_count(shape((3, 1))) - parameter_count(shape((1, 3))) == 2 * 9 * (16 * 16 - 8 * 8)
    from nnugen_planner.memory import activation_elements

    assert activation_elements(shape((3, 1)), False) < activation_elements(shape((1, 3)), False)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("patch, kernels, strides", [
    ((16, 16), ((3, 3), (3, 3), (3, 3)), ((1, 1), (2, 2), (2, 2))),
    ((8, 16, 16), ((1, 3, 3), (3, 3, 3), (3, 3, 3)), ((1, 1, 1), (1, 2, 2), (2, 2, 2))),
])
def test_convolution_macs_match_torchs_flop_counter_on_the_real_denoiser(patch, kernels, strides, residual):
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from nnugen.networks import TimeConditionedUNet

    shape = UNetShape(3, 2, patch, (4, 8, 16), kernels, strides, (2, 1, 2), (1, 2))
    network = TimeConditionedUNet(3, 2, shape.features_per_stage, kernels, strides, shape.n_conv_per_stage,
                                  shape.n_conv_per_stage_decoder, residual_stages=residual)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        network(torch.zeros(1, 3, *patch), torch.zeros(1))
    conv_flops = sum(flops for op, flops in counter.get_flop_counts()["Global"].items() if "convolution" in str(op))
    assert conv_flops == 2 * forward_macs(shape, residual_stages=residual)


def test_discriminator_macs_match_a_hand_count_and_err_high_against_torch():
    # 2D, 32 x 32, one layer: 4x4 conv 1 -> 32 at 16 x 16, 4x4 conv 32 -> 64 at 16 x 16 (the last layer keeps the
    # size), 4x4 conv 64 -> 1 at 16 x 16
    assert discriminator_macs(1, (32, 32), 1) == 16 * 1 * 32 * 256 + 16 * 32 * 64 * 256 + 16 * 64 * 256
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from nnugen.networks.patch_discriminator import make_patch_discriminator

    patch = (24, 32, 32)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        make_patch_discriminator(2, 3, num_layers=2)(torch.zeros(1, 2, *patch))
    real = sum(flops for op, flops in counter.get_flop_counts()["Global"].items() if "convolution" in str(op)) / 2
    assert real <= discriminator_macs(2, patch, 2) <= 1.5 * real  # padding and the stride-1 layers: it errs high


def test_passes_per_step():
    assert passes_per_step() == 3
    assert passes_per_step(checkpointing=True) == 4
    assert passes_per_step(recycling=True) == 4
    assert passes_per_step(True, True, True) == 5.5


def test_time_is_linear_in_batch_accumulation_and_iterations():
    one = seconds_per_iteration(1e9, 1, 1, GPU_THROUGHPUT)
    assert one == pytest.approx(2e9 / (GPU_THROUGHPUT.tflops * 1e12))
    assert seconds_per_iteration(1e9, 4, 1, GPU_THROUGHPUT) == pytest.approx(4 * one)
    assert seconds_per_iteration(1e9, 2, 3, GPU_THROUGHPUT) == pytest.approx(6 * one)
    assert seconds_per_iteration(3e9, 1, 1, GPU_THROUGHPUT) == pytest.approx(3 * one)
    assert training_seconds(0.5, 1000, 250) == pytest.approx(125000.0)
    assert training_seconds(0.5, 1000, 500) == pytest.approx(2 * training_seconds(0.5, 1000, 250))
    assert training_seconds(0.5, 10, 250) == pytest.approx(training_seconds(0.5, 1000, 250) / 100)
    assert seconds_per_iteration(1e9, 1, 1, CPU_THROUGHPUT) > one  # the CPU is slower


@pytest.mark.parametrize("call", [
    lambda: seconds_per_iteration(1e9, 0, 1, GPU_THROUGHPUT),
    lambda: seconds_per_iteration(1e9, 1, 0, GPU_THROUGHPUT),
    lambda: seconds_per_iteration(-1.0, 1, 1, GPU_THROUGHPUT),
    lambda: training_seconds(1.0, 0, 250),
    lambda: Throughput("a device", 0.0, "none"),
    lambda: Throughput("a device", float("nan"), "none"),
])
def test_bad_values_raise_value_error(call):
    with pytest.raises(ValueError):
        call()


def test_readable_duration():
    assert readable_duration(225000) == "about 2.6 days"
    assert readable_duration(62.5 * 3600) == "about 2.6 days"
    assert readable_duration(30 * 3600) == "about 30 h"
    assert readable_duration(40 * 60) == "about 40 min"
    assert readable_duration(90) == "about 90 s"


# --- what nnugen_plan prints ---------------------------------------------------------------------------------------


def _planned(folder, **kwargs) -> dict:
    return json.loads(plan_dataset(PlanRequest(dataset="901", **kwargs)).read_text(encoding="utf-8"))


def test_every_task_network_matches_its_memory_plan(fake_preprocessed):
    """The network whose time is estimated is the one the memory plan counted: same estimate at the planned batch."""
    folder = fake_preprocessed("anisotropic")
    plans = _planned(folder)
    dataset_json = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    n_channels, n_classes = len(dataset_json["channel_names"]), len(dataset_json["labels"])
    checked = set()
    for name, configuration in plans["configurations"].items():
        if "nnugen" not in configuration:  # a configuration that inherits from another (3d_cascade_fullres)
            continue
        section = NnugenSection.from_dict(configuration["nnugen"])
        for task in ("baseline", "segmentation", "ddpm", "ldm", "anomaly"):
            if task not in section.tasks:
                continue
            memory = section.task(task).memory
            shape = task_network(task, section, configuration, name, n_channels, n_classes).shape
            extras = TrainingExtras() if task in ("baseline", "segmentation") else \
                TrainingExtras(frozen_parameters=parameter_count(shape))  # the generators' EMA copy
            estimate = estimate_gb(shape, memory.batch_size, memory.amp, memory.activation_checkpointing, extras)
            assert round(estimate, 2) == memory.estimated_gb, (name, task)
            checked.add(task)
    assert checked == {"baseline", "segmentation", "ddpm", "ldm", "anomaly"}


def test_nnugen_plan_prints_the_training_time_of_every_task_and_writes_the_same_plans(fake_preprocessed, capsys):
    from nnugen.entrypoints.plan import main

    folder = fake_preprocessed("anisotropic")
    assert main(["-d", "901", "--gpu-memory-gb", "24"]) == 0
    out = capsys.readouterr().out
    written = (folder / "nnugenPlans.json").read_text(encoding="utf-8")
    plans = json.loads(written)
    assert json.loads(plan_dataset(PlanRequest(dataset="901", gpu_memory_gb=24, overwrite=True))
                      .read_text(encoding="utf-8")) == plans  # printing changes nothing that is planned
    dataset_json = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    estimates = planned_times(plans, len(dataset_json["channel_names"]), len(dataset_json["labels"]),
                              list(plans["configurations"]))
    assert {(e.configuration, e.task) for e in estimates} == {
        (name, task) for name, c in plans["configurations"].items() for task in c.get("nnugen", {}).get("tasks", {})}
    line = re.compile(r"^nnugen_plan: (\S+) (\w+): (\d+) epochs x (\d+) iterations "
                      r"\(batch (\d+)( x \d+ accumulated)?\), about ([0-9.e+-]+) s per iteration "
                      r"on a GPU of 24 GB -> about [0-9.]+ (days|h|min|s)$")
    printed = [line.match(text) for text in out.splitlines() if line.match(text)]
    assert len(printed) == len(estimates)
    for match, estimate in zip(printed, estimates):
        assert (match[1], match[2]) == (estimate.configuration, estimate.task)
        assert (int(match[3]), int(match[4])) == (1000, 250)
        assert float(match[7]) == pytest.approx(estimate.seconds_per_iteration, rel=0.05)
    ddpm = next(e for e in estimates if (e.configuration, e.task) == ("3d_fullres", "ddpm"))
    assert ddpm.total_seconds == pytest.approx(1000 * 250 * ddpm.seconds_per_iteration)
    assert "assume 25 effective TFLOP/s on a GPU, an assumption not measured on a GPU" in out


def test_the_printed_time_follows_the_written_plans(fake_preprocessed, capsys):
    """--set changes of the length, the batch or the network reach the estimate: it is read back from the file."""
    from nnugen.entrypoints.plan import main

    fake_preprocessed("anisotropic")

    def ddpm_line(*sets: str) -> str:
        assert main(["-d", "901", "-c", "3d", "--overwrite", *[f"--set={s}" for s in sets]]) == 0
        return next(text for text in capsys.readouterr().out.splitlines()
                    if text.startswith("nnugen_plan: 3d_fullres ddpm:"))

    planned = ddpm_line()
    assert "1000 epochs x 250 iterations" in planned
    shorter = ddpm_line("ddpm.training.epochs=10")
    assert "10 epochs x 250 iterations" in shorter
    seconds = re.compile(r"about ([0-9.e+-]+) s per iteration")
    assert float(seconds.search(shorter)[1]) == pytest.approx(float(seconds.search(planned)[1]))
    doubled = ddpm_line("ddpm.memory.batch_size=4")
    assert float(seconds.search(doubled)[1]) == pytest.approx(2 * float(seconds.search(planned)[1]), rel=0.05)
