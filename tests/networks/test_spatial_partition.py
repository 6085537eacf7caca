"""A patch split across 2 gloo processes (issue 19, part 4) gives one process's outputs, loss and weight gradients:
nnU-Net's PlainConvUNet with deep supervision and nnU-Net's Dice + CE, the segmentation denoiser (instance norm,
plain stages, time conditioning) and a generative denoiser (group norm, residual stages), cut along each spatial
axis. Plus the norm swap, the refused partitions and the install hint, in one process."""

from __future__ import annotations

import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nnugen.networks import spatial_partition
from nnugen.networks.spatial_partition import (
    PartitionError,
    check_partition,
    domain_mesh,
    partition_ready,
    run_partitioned,
    shard_spatial,
    whole,
)
from nnugen.networks.time_conditioned_unet import TimeConditionedUNet

WORLD = 2
PATCH = (16, 16, 16)
CASES = {  # name: (pieces per spatial axis, network kind)
    "nnunet_axis0": ((2, 1, 1), "nnunet"),
    "nnunet_axis2": ((1, 1, 2), "nnunet"),
    "seg_denoiser_axis1": ((1, 2, 1), "seg_denoiser"),
    "generative_denoiser_axis0": ((2, 1, 1), "generative_denoiser"),
    "nnunet_2d_axis1": ((1, 2), "nnunet_2d"),
    "hooked_nnunet_axis2": ((1, 1, 2), "nnunet"),  # run_partitioned: blocks in, whole outputs out, plain loss
    "hooked_seg_denoiser_axis0": ((2, 1, 1), "seg_denoiser"),
}


def _network(kind: str) -> nn.Module:
    torch.manual_seed(0)
    stages = {"kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]]}
    if kind.startswith("nnunet"):
        from dynamic_network_architectures.architectures.unet import PlainConvUNet

        two_d = kind == "nnunet_2d"
        if two_d:
            stages = {"kernel_sizes": [[3, 3]] * 3, "strides": [[1, 1], [2, 2], [2, 2]]}
        network = PlainConvUNet(2, 3, [8, 16, 32], nn.Conv2d if two_d else nn.Conv3d, n_conv_per_stage=[2, 2, 2],
                                num_classes=3, n_conv_per_stage_decoder=[2, 2], conv_bias=True,
                                norm_op=nn.InstanceNorm2d if two_d else nn.InstanceNorm3d,
                                norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
                                nonlin_kwargs={"inplace": True}, deep_supervision=True, **stages)
    elif kind == "seg_denoiser":
        network = TimeConditionedUNet(5, 3, [8, 16, 32], n_conv_per_stage=[2, 2, 2], n_conv_per_stage_decoder=[2, 2],
                                      norm="instance", residual_stages=False, **stages)
    else:
        network = TimeConditionedUNet(2, 2, [8, 16, 32], n_conv_per_stage=[1, 1, 1], n_conv_per_stage_decoder=[1, 1],
                                      norm="group", residual_stages=True, **stages)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # away from the zero initialisations, so every weight gets a gradient
        for parameter in network.parameters():
            parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    return network


def _batch(kind: str) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(2)
    channels = {"nnunet": 2, "nnunet_2d": 2, "seg_denoiser": 5, "generative_denoiser": 2}[kind]
    patch = PATCH[1:] if kind == "nnunet_2d" else PATCH
    return {"x": torch.randn(2, channels, *patch, generator=generator),
            "t": torch.tensor([3, 1]),
            "target": torch.randint(0, 3, (2, 1, *patch), generator=generator)}


def _loss(kind: str, network: nn.Module, batch: dict, shard=lambda tensor: tensor) -> torch.Tensor:
    """The task's loss of one batch; ``shard`` turns each whole input and target into this rank's block."""
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss

    dice_ce = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
                             weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss)
    if kind.startswith("nnunet"):
        targets = [batch["target"][(..., *(slice(None, None, 2**level),) * (batch["target"].ndim - 2))]
                   for level in range(3)]
        return DeepSupervisionWrapper(dice_ce, [4 / 7, 2 / 7, 1 / 7])(network(shard(batch["x"])),
                                                                      [shard(t) for t in targets])
    prediction = network(shard(batch["x"]), batch["t"])
    if kind == "seg_denoiser":
        return dice_ce(prediction, shard(batch["target"]))
    return ((prediction - shard(batch["x"])) ** 2).mean()


def _worker(rank: int, folder: str, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        results = {}
        for name, (pieces, kind) in CASES.items():
            network = partition_ready(_network(kind))
            mesh = domain_mesh(pieces)
            time = () if kind.startswith("nnunet") else (_batch(kind)["t"],)
            seen: list[str] = []  # what the first convolution is handed: this rank's block, not the whole patch
            first_conv = next(m for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d)))
            first_conv.register_forward_pre_hook(lambda m, args, seen=seen: seen.append(
                f"{type(args[0]).__name__} {tuple(getattr(args[0], 'to_local', lambda a=args[0]: a)().shape)}"))
            if name.startswith("hooked"):
                run_partitioned(network, mesh)
                loss = _loss(kind, network, _batch(kind))
                loss.backward()
                outputs = network(_batch(kind)["x"], *time)
            else:
                loss = _loss(kind, network, _batch(kind), lambda tensor, mesh=mesh: shard_spatial(tensor, mesh))
                loss.backward()
                outputs = network(shard_spatial(_batch(kind)["x"], mesh), *time)
            first = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
            results[name] = {"loss": float(whole(loss)), "output": whole(first).detach(), "seen": seen[0],
                             "grads": {n: p.grad.clone() for n, p in network.named_parameters() if p.grad is not None}}
        torch.save(results, os.path.join(folder, f"rank_{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def partitioned(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("spatial_partition")
    port = 29500 + os.getpid() % 2000  # set in the workers only: a MASTER_PORT left here would reach later CLIs
    mp.start_processes(_worker, args=(str(folder), port), nprocs=WORLD, join=True, start_method="spawn")
    return [torch.load(folder / f"rank_{rank}.pt", weights_only=True) for rank in range(WORLD)]


@pytest.mark.parametrize("name", list(CASES))
def test_two_blocks_give_one_process_loss_output_and_gradients(partitioned, name):
    kind = CASES[name][1]
    network = _network(kind)
    loss = _loss(kind, network, _batch(kind))
    loss.backward()
    with torch.no_grad():
        outputs = network(_batch(kind)["x"], *(() if kind.startswith("nnunet") else (_batch(kind)["t"],)))
    output = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    grads = {n: p.grad for n, p in network.named_parameters() if p.grad is not None}
    scale = max(float(g.abs().max()) for g in grads.values())
    pieces = CASES[name][0]
    block = tuple(size // count for size, count in zip(_batch(kind)["x"].shape[2:], pieces))
    for rank, result in enumerate(partitioned):
        got = result[name]
        assert got["seen"] == f"ShardTensor {(2, _batch(kind)['x'].shape[1], *block)}"
        assert got["loss"] == pytest.approx(float(loss), rel=1e-5), rank
        torch.testing.assert_close(got["output"], output, rtol=0, atol=1e-5 * float(output.abs().max()))
        assert set(got["grads"]) == set(grads)
        for parameter, grad in grads.items():
            # float32 sums in another order: within 1e-3 of the largest gradient (measured: up to 2e-4)
            torch.testing.assert_close(got["grads"][parameter], grad, rtol=0, atol=1e-3 * scale, msg=parameter)
    # the ranks hold the same (reduced) gradients, so their optimiser steps stay identical without DDP
    for parameter in grads:
        assert torch.equal(partitioned[0][name]["grads"][parameter], partitioned[1][name]["grads"][parameter])


def test_instance_norm_becomes_the_same_group_norm():
    network = _network("nnunet")
    before = {k: v.clone() for k, v in network.state_dict().items()}
    instance_norms = sum(isinstance(m, nn.InstanceNorm3d) for m in network.modules())
    parameters = list(network.parameters())  # what an optimiser made before the swap holds
    x = torch.randn(1, 2, *PATCH)
    with torch.no_grad():
        expected = network(x)[0]
        partition_ready(network)
        got = network(x)[0]
    assert not any(isinstance(m, nn.InstanceNorm3d) for m in network.modules())
    group_norms = sum(isinstance(m, nn.GroupNorm) and m.num_groups == m.num_channels for m in network.modules())
    assert group_norms == instance_norms == 10
    assert network.state_dict().keys() == before.keys()
    assert all(a is b for a, b in zip(network.parameters(), parameters, strict=True))
    assert [n for n, _ in network.named_parameters()] == [n for n, _ in _network("nnunet").named_parameters()]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_norms_with_running_statistics_and_cpu_attention_are_refused():
    batch_norm = nn.Sequential(nn.Conv3d(1, 4, 3), nn.BatchNorm3d(4))
    with pytest.raises(PartitionError, match="running statistics"):
        partition_ready(batch_norm)
    attention = TimeConditionedUNet(1, 1, [8, 16], [[3, 3]] * 2, [[1, 1], [2, 2]], [1, 1], [1], norm="group",
                                    attention_stages=(1,))
    with pytest.raises(PartitionError, match="needs CUDA"):
        partition_ready(attention)


@pytest.mark.parametrize("pieces, world, message", [
    ((2, 1), 2, "needs 3 positive piece counts"),
    ((2, 2, 1), 2, "makes 4 blocks but 2 process"),
    ((1, 3, 1), 3, "axis 1 of the patch .16 voxels. does not split into 3 blocks"),
    ((1, 1, 8), 8, "axis 2 of the patch .16 voxels. does not split into 8 blocks of a multiple of 4"),
])
def test_partitions_the_patch_cannot_take_are_refused(pieces, world, message):
    with pytest.raises(PartitionError, match=message):
        check_partition(pieces, PATCH, [[1, 1, 1], [2, 2, 2], [2, 2, 2]], world)
    check_partition((1, 1, 2), PATCH, [[1, 1, 1], [2, 2, 2], [2, 2, 2]], 2)


def test_a_missing_engine_says_how_to_install_it(monkeypatch):
    spatial_partition.domain_parallel.cache_clear()
    monkeypatch.setitem(sys.modules, "physicsnemo", None)
    monkeypatch.setitem(sys.modules, "physicsnemo.domain_parallel", None)
    try:
        with pytest.raises(PartitionError, match=r"pip install 'nnugen\[partition\]'"):
            spatial_partition.domain_parallel()
    finally:
        spatial_partition.domain_parallel.cache_clear()
