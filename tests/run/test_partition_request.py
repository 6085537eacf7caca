"""``nnugen_train ... --partition`` at the door (issue 19, part 4): refused in one line, before anything runs, outside
torchrun, for a task other than baseline, with pieces that are not the world size or that the planned patch and its
downsampling cannot take, and without PhysicsNeMo; accepted for a partition the plan takes."""

from __future__ import annotations

import sys

import pytest

from nnugen.networks import spatial_partition
from nnugen.run.train_api import TrainRequest, check_request
from nnugen_planner.planner import PlanRequest, plan_dataset


@pytest.fixture()
def planned(fake_preprocessed, tmp_path, monkeypatch):
    """Dataset 901 planned by nnugen (3d_fullres patch 48^3, strides 1, 2, 2, 2 per axis)."""
    fake_preprocessed("isotropic")
    plan_dataset(PlanRequest(dataset="901"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))


def _under_torchrun(monkeypatch, world_size: int) -> None:
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", str(world_size))
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    monkeypatch.setenv("MASTER_PORT", "29500")


def _request(partition, task="baseline") -> TrainRequest:
    return TrainRequest(dataset="901", fold="0", configuration="3d", task=task, device="cpu", partition=partition)


def test_a_partition_the_plan_takes_passes(planned, monkeypatch):
    _under_torchrun(monkeypatch, 2)
    assert check_request(_request((1, 1, 2))) == ("3d_fullres", "NnugenBaselineTrainer")


@pytest.mark.parametrize("partition, world, task, message", [
    ((1, 1, 2), None, "baseline", "--partition splits each patch across the processes of a torchrun job"),
    ((1, 1, 2), 2, "anomaly", "--partition trains --task baseline, seg, ddpm for now, not --task anomaly"),
    ((1, 1, 2), 2, "ddpm", "--partition on -device cpu: the ddpm denoiser has attention (stages"),
    ((1, 2, 2), 2, "baseline", "--partition 1 2 2 makes 4 blocks but 2 process(es) run"),
    ((1, 1, 4), 4, "baseline", "spatial axis 2 of the patch (48 voxels) does not split into 4 blocks of a multiple "
                               "of 8 voxels"),
    ((2, 2), 4, "baseline", "--partition needs 3 positive piece counts"),
])
def test_partitions_that_cannot_run_are_refused(planned, monkeypatch, partition, world, task, message):
    if world is not None:
        _under_torchrun(monkeypatch, world)
    with pytest.raises(ValueError) as refused:
        check_request(_request(partition, task))
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_the_segmentation_denoisers_deep_supervision_is_refused_at_the_door(fake_preprocessed, tmp_path, monkeypatch):
    fake_preprocessed("isotropic")
    plan_dataset(PlanRequest(dataset="901", sets=("segmentation.diffusion.deep_supervision=true",
                                                      "segmentation.denoiser.attention_stages=[]")))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    _under_torchrun(monkeypatch, 2)
    with pytest.raises(ValueError, match="deep supervision .diffusion.deep_supervision. bypasses"):
        check_request(_request((1, 1, 2), "seg"))


def test_without_physicsnemo_the_door_says_how_to_install_it(planned, monkeypatch):
    _under_torchrun(monkeypatch, 2)
    spatial_partition.domain_parallel.cache_clear()
    monkeypatch.setitem(sys.modules, "physicsnemo", None)
    monkeypatch.setitem(sys.modules, "physicsnemo.domain_parallel", None)
    try:
        with pytest.raises(ValueError, match=r"pip install 'nnugen\[partition\]'"):
            check_request(_request((1, 1, 2)))
    finally:
        spatial_partition.domain_parallel.cache_clear()
