"""A network run on a patch split across processes along its spatial axes (Hou et al. 2019, "High Resolution
Medical Image Analysis with Spatial Partitioning"; issue 19, part 4), on NVIDIA PhysicsNeMo's ``ShardTensor``.

Every rank holds the whole network and the whole batch, and turns the batch into its block of the patch
(:func:`shard_spatial`). The network then runs on ``ShardTensor`` inputs unchanged: PhysicsNeMo's convolutions
(strided and transposed included) exchange halos with the neighbouring blocks in forward and backward, GroupNorm
reduces its statistics over the blocks, reductions such as nnU-Net's Dice and cross-entropy come out global, and
every weight gradient is reduced over the blocks, so each rank's gradients are those of the whole patch and the
optimiser steps stay identical without DDP. :func:`run_partitioned` does this inside a model: the network gets its
block and hands back whole outputs, so the loss around it needs no change. Nothing of this is nnU-Net specific.

Two things the engine lacks are mended here: InstanceNorm (nnU-Net's norm) becomes the GroupNorm with one group
per channel, the same function with the same parameter names (:func:`partition_ready`), and each block's shape is
given, not gathered (PhysicsNeMo's shape inference pins CPU memory, which needs CUDA).

PhysicsNeMo is an optional dependency (``pip install 'nnugen[partition]'``); :func:`domain_parallel` says how to get
it. Attention blocks run PhysicsNeMo's ring attention, which needs CUDA: refused on a CPU partition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from types import ModuleType

import torch
from torch import nn

from nnugen.patch_blocks import misaligned_axis

INSTALL_HINT = "spatial partitioning needs NVIDIA PhysicsNeMo's ShardTensor: pip install 'nnugen[partition]'"
_INSTANCE_NORMS = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class PartitionError(ValueError):
    """A partition this network, patch or installation cannot run; the message says what to do."""


@lru_cache(maxsize=1)
def domain_parallel() -> ModuleType:
    """``physicsnemo.domain_parallel`` with its shard-aware operations registered (GroupNorm fails on sharded
    input without them), or a one-line :class:`PartitionError` that says how to install it."""
    try:
        import physicsnemo.domain_parallel as engine
    except ImportError as error:
        raise PartitionError(f"{INSTALL_HINT} ({error})") from None
    engine.register_custom_ops()
    return engine


def partition_ready(network: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """Make ``network`` run on spatially sharded input, in place, and return it.

    Every affine InstanceNorm becomes ``GroupNorm(C, C)``: per sample and channel statistics over all spatial
    positions, the same eps, the same ``weight`` / ``bias`` Parameters (an optimiser made before keeps stepping
    them; state dicts and checkpoints load either way).
    Refused: BatchNorm and InstanceNorm with running statistics (statistics of one block, not of the patch), and
    attention blocks on a CPU partition (ring attention needs CUDA).
    """
    device = torch.device(device)
    replacements: dict[int, nn.Module] = {}  # one GroupNorm per InstanceNorm, however often it is referenced
    for parent in list(network.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _BATCH_NORMS) or (isinstance(child, _INSTANCE_NORMS) and child.track_running_stats):
                raise PartitionError(
                    f"{name} ({type(child).__name__}) keeps running statistics, which a spatial partition would take "
                    "from one block only; plan the network with instance or group norm"
                )
            if isinstance(child, _INSTANCE_NORMS):
                if not child.affine:
                    raise PartitionError(f"{name}: InstanceNorm without affine parameters is not supported; use "
                                         "affine=True (nnU-Net's default)")
                if id(child) not in replacements:
                    group_norm = nn.GroupNorm(child.num_features, child.num_features, eps=child.eps, affine=True)
                    # the same Parameter objects: an optimiser built before the swap keeps stepping them
                    group_norm.weight, group_norm.bias = child.weight, child.bias
                    replacements[id(child)] = group_norm
                setattr(parent, name, replacements[id(child)])
            elif device.type != "cuda" and "Attention" in type(child).__name__:
                raise PartitionError(
                    f"{name} ({type(child).__name__}): attention on a spatial partition runs PhysicsNeMo's ring "
                    "attention, which needs CUDA; plan the denoiser without attention stages for a CPU partition"
                )
    return network


def check_partition(pieces: Sequence[int], patch_size: Sequence[int], strides: Sequence[Sequence[int]],
                    world_size: int) -> None:
    """One-line :class:`PartitionError` unless ``pieces`` (per spatial axis) cut ``patch_size`` into blocks that
    every downsampling keeps aligned: along each axis the patch divides into ``pieces`` blocks whose size is a
    multiple of the product of that axis's strides, and the pieces multiply to ``world_size``."""
    pieces, patch_size = tuple(int(p) for p in pieces), tuple(int(s) for s in patch_size)
    if len(pieces) != len(patch_size) or min(pieces) < 1:
        raise PartitionError(f"--partition needs {len(patch_size)} positive piece counts, one per spatial axis of "
                             f"the patch {patch_size}; got {pieces}")
    if math.prod(pieces) != world_size:
        raise PartitionError(f"--partition {' '.join(map(str, pieces))} makes {math.prod(pieces)} blocks but "
                             f"{world_size} process(es) run; start as many processes as blocks")
    problem = misaligned_axis(pieces, patch_size, strides)
    if problem is not None:
        raise PartitionError(problem)


def domain_mesh(pieces: Sequence[int], device: torch.device | str = "cpu"):
    """The device mesh of a partition: one mesh axis per spatial axis cut into more than one piece, ranks in
    row-major order of the blocks (needs an initialised process group)."""
    from torch.distributed.device_mesh import init_device_mesh

    cut = [(axis, int(count)) for axis, count in enumerate(pieces) if count > 1]
    if not cut:
        raise PartitionError("--partition with one piece along every axis needs no partition; leave it out")
    return init_device_mesh(torch.device(device).type, tuple(count for _, count in cut),
                            mesh_dim_names=tuple(f"axis{axis}" for axis, _ in cut))


def shard_spatial(tensor: torch.Tensor, mesh, first_spatial: int = 2):
    """This rank's block of ``tensor`` (held whole by every rank; spatial axes from ``first_spatial`` on, e.g. 2
    for ``(B, C, *S)`` and 1 for a ``(B, *S)`` label map) as a ``ShardTensor`` of the whole tensor's shape."""
    engine = domain_parallel()
    from torch.distributed.tensor.placement_types import Shard

    axes = [first_spatial + int(name.removeprefix("axis")) for name in mesh.mesh_dim_names]
    block = tensor
    for axis, coordinate, count in zip(axes, mesh.get_coordinate(), mesh.shape):
        block = block.chunk(count, dim=axis)[coordinate]
    return engine.ShardTensor.from_local(block.contiguous(), mesh, [Shard(axis) for axis in axes],
                                         sharding_shapes="chunk", global_shape=tuple(tensor.shape))


def run_partitioned(network: nn.Module, mesh) -> list:
    """Make every call of ``network`` in training mode run on this rank's block: its first argument (``(B, C, *S)``)
    is cut into blocks on the way in, and its outputs (a tensor or a list of them) come back whole, gathered from the
    blocks. Backward through the gathering hands each rank its block's share of the gradient, so losses computed on
    the whole outputs, the same on every rank, give every rank the whole patch's weight gradients. In eval mode the
    network runs as it is. Forward hooks, so names and state dicts stay; returns the hooks' handles."""

    def cut_input(module: nn.Module, args: tuple, kwargs: dict):
        if not module.training:
            return None
        return (shard_spatial(args[0], mesh), *args[1:]), kwargs

    def whole_output(module: nn.Module, args: tuple, kwargs: dict, output):
        if not module.training:
            return None
        return type(output)(whole(o) for o in output) if isinstance(output, (list, tuple)) else whole(output)

    return [network.register_forward_pre_hook(cut_input, with_kwargs=True),
            network.register_forward_hook(whole_output, with_kwargs=True)]


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor from a ``ShardTensor`` (gathered from every block); a plain tensor as it is."""
    full = getattr(tensor, "full_tensor", None)
    return full() if full is not None else tensor
