"""The memory planner's spatial partition (issue 19, part 4): where batch 1 of a patch does not fit the GPU budget
whole, the tasks that train partitioned (baseline, segmentation, ddpm) are planned with the fewest aligned blocks
that fit, one per torchrun process; the tasks that cannot be partitioned are left out with the reason, and training
them is refused with it; ``nnugen_train`` runs a planned partition under torchrun with one process per block."""

from __future__ import annotations

import json
import math

import pytest

from nnugen.config import NnugenSection
from nnugen.patch_blocks import aligned_partitions, misaligned_axis
from nnugen.run.train_api import TrainRequest, check_request
from nnugen_planner.memory import UNetShape, estimate_gb, plan_memory
from nnugen_planner.planned_time import planned_times, unplanned_tasks
from nnugen_planner.planner import PlanRequest, plan_dataset

# the anisotropic fixture's 3d_fullres network (20 x 320 x 256; 6 downsamplings, the first two in-plane only)
STRIDES = ((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2), (1, 2, 2), (1, 2, 2))
SHAPE = UNetShape(in_channels=1, out_channels=2, patch_size=(20, 320, 256),
                  features_per_stage=(32, 64, 128, 256, 320, 320, 320),
                  kernel_sizes=((1, 3, 3),) * 2 + ((3, 3, 3),) * 5,
                  strides=STRIDES, n_conv_per_stage=(2,) * 7, n_conv_per_stage_decoder=(2,) * 6)


def test_candidates_are_aligned_and_come_fewest_blocks_first():
    found = aligned_partitions(SHAPE.patch_size, STRIDES, 8)
    # 20 / 4 (axis 0's total stride) = 5, 320 / 64 = 5, 256 / 64 = 4 aligned units per axis; among the two 5-block
    # partitions, 20 x 64 x 256 blocks before 4 x 320 x 256 ones (less halo per voxel)
    assert found == [(1, 1, 2), (1, 1, 4), (1, 5, 1), (5, 1, 1)]
    assert all(misaligned_axis(p, SHAPE.patch_size, STRIDES) is None for p in found)
    assert misaligned_axis((1, 2, 1), SHAPE.patch_size, STRIDES) == (
        "spatial axis 1 of the patch (320 voxels) does not split into 2 blocks of a multiple of 64 voxels (the "
        "network's downsampling along it); choose pieces that divide 5")
    assert aligned_partitions(SHAPE.patch_size, STRIDES, 4) == [(1, 1, 2), (1, 1, 4)]


def test_a_block_needs_less_than_the_whole_patch_and_only_what_does_not_fit_is_split():
    whole = estimate_gb(SHAPE, 1, "bf16", True)
    two = estimate_gb(SHAPE, 1, "bf16", True, pieces=(1, 1, 2))
    four = estimate_gb(SHAPE, 1, "bf16", True, pieces=(1, 1, 4))
    assert whole > two > four
    # a block's activations with its halo: more than its share of the whole patch's
    context_and_weights = estimate_gb(SHAPE, 0, "bf16", True)
    assert two - context_and_weights > (whole - context_and_weights) / 2
    partitions = aligned_partitions(SHAPE.patch_size, STRIDES, 8)
    assert plan_memory(SHAPE, 2, whole + 0.01, partitions=partitions).partition == ()  # fits whole: not split
    plan = plan_memory(SHAPE, 2, (two + whole) / 2, partitions=partitions)
    assert (plan.partition, plan.batch_size, plan.grad_accumulation, plan.activation_checkpointing) == \
        ((1, 1, 2), 1, 2, True)
    assert plan.estimated_gb == round(two, 2)
    assert plan_memory(SHAPE, 2, (four + two) / 2, partitions=partitions).partition == (1, 1, 4)
    with pytest.raises(ValueError, match="nor split into up to 5 blocks"):
        plan_memory(SHAPE, 2, 1.01, partitions=partitions)


@pytest.fixture()
def tight(fake_preprocessed, tmp_path, monkeypatch):
    """The anisotropic dataset planned for 3 GB: its 3d_fullres patch does not fit whole at batch 1."""
    folder = fake_preprocessed("anisotropic")
    path = plan_dataset(PlanRequest(dataset="901", gpu_memory_gb=3.0))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    return json.loads(path.read_text()), folder


def test_the_plan_splits_what_does_not_fit_and_leaves_out_what_cannot_be_split(tight):
    plans, _ = tight
    configurations = plans["configurations"]
    section = NnugenSection.from_dict(configurations["3d_fullres"]["nnugen"], "3d_fullres.nnugen")
    for task in ("baseline", "segmentation", "ddpm"):
        memory = section.task(task).memory
        assert memory.planned_partition is not None, task
        assert misaligned_axis(memory.partition, (20, 320, 256), section.task(task).denoiser.strides
                               if task != "baseline" else STRIDES) is None
        assert memory.estimated_gb <= 3.0 and memory.batch_size * memory.grad_accumulation == 2, task
    assert set(section.unfit) == {"autoencoder", "anomaly", "ldm"}
    with pytest.raises(ValueError, match=r"task 'anomaly' was not planned: 3d_fullres / anomaly: .*--gpu-memory-gb"):
        section.task("anomaly")
    lowres = NnugenSection.from_dict(configurations["3d_lowres"]["nnugen"], "3d_lowres.nnugen")
    assert lowres.unfit == {} and all(t.memory.planned_partition is None for t in lowres.tasks.values())


def _under_torchrun(monkeypatch, world_size: int) -> None:
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", str(world_size)),
                       ("MASTER_ADDR", "localhost"), ("MASTER_PORT", "29500")):
        monkeypatch.setenv(key, value)


def test_nnugen_plan_prints_the_split_and_what_it_left_out(tight):
    plans, _ = tight
    times = {(t.configuration, t.task): t for t in planned_times(plans, 1, 3, ["3d_fullres"])}
    assert set(times) == {("3d_fullres", task) for task in ("baseline", "segmentation", "ddpm")}
    split = times[("3d_fullres", "segmentation")]
    assert split.blocks == 2 and "on 2 x " in split.line() and "each patch split across them" in split.line()
    lines = unplanned_tasks(plans, ["3d_lowres", "3d_fullres"])
    assert [line.split(":")[1] for line in lines] == [" 3d_fullres autoencoder", " 3d_fullres anomaly",
                                                       " 3d_fullres ldm"]
    assert "not planned: 3d_fullres / autoencoder: the 3D patch" in lines[0]
    assert "not planned: it trains on the latents of the autoencoder, which was not planned: 3d_fullres" in lines[2]


def test_nnugen_train_runs_a_planned_partition_with_one_process_per_block(tight, monkeypatch):
    configurations = tight[0]["configurations"]
    pieces = NnugenSection.from_dict(configurations["3d_fullres"]["nnugen"]).task("baseline").memory.partition
    request = TrainRequest(dataset="901", fold="0", configuration="3d", task="baseline", device="cpu")
    with pytest.raises(ValueError) as alone:
        check_request(request)
    message = str(alone.value)
    assert f"torchrun --nproc_per_node {math.prod(pieces)} $(which nnugen_train)" in message
    assert "baseline.memory.partition" in message and "one process" in message and "\n" not in message
    # --val predicts whole cases in one process: no partition asked for, only the missing checkpoint
    with pytest.raises(ValueError, match="--val: .*checkpoint_final.pth does not exist"):
        check_request(TrainRequest(dataset="901", fold="0", configuration="3d", task="baseline", device="cpu",
                                   only_validation=True))
    _under_torchrun(monkeypatch, math.prod(pieces) + 1)
    with pytest.raises(ValueError, match=f"this is {math.prod(pieces) + 1} process"):
        check_request(request)
    _under_torchrun(monkeypatch, math.prod(pieces))
    assert check_request(request) == ("3d_fullres", "NnugenBaselineTrainer")
    with pytest.raises(ValueError, match="task 'autoencoder' was not planned"):
        check_request(TrainRequest(dataset="901", fold="0", configuration="3d", task="autoencoder", device="cpu"))
