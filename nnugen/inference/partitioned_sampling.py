"""``torchrun --nproc_per_node N nnugen_sample ... --partition Z Y X``: every case sampled by all N processes
together, each denoising one slab of the volume (``nnugen.diffusion.partitioned_denoiser``), the noise drawn per voxel
position (``nnugen.diffusion.positional_noise``), and rank 0 gathering the volume and writing the files one process
would write.

- ``check_partition``: before anything is loaded or written, on every rank: a grid with one number per spatial
  axis, whose product is torchrun's WORLD_SIZE (1 without torchrun), that leaves every rank at least one window per
  axis; for the latent model, of its latents (``sampled_volume``), each rank then decoding its own latent box.
- ``check_partition_flags`` / ``check_grid`` / ``joined_ranks`` / ``broadcast_from_rank_zero`` serve
  ``nnugen_predict --partition`` too (``partitioned_prediction.py``).
- ``joined_ranks``: joins torchrun's process group (gloo on the CPU, NCCL on CUDA, ``cuda:LOCAL_RANK``) with the
  run's timeout, so a rank that dies or stalls ends the others (``RankLost``) instead of leaving them waiting.
- ``sample_partitioned``: one case on this rank's extent; the whole volume on rank 0, None elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from nnugen.run.distributed import check_torchrun_device, cpu_threads_per_rank, torchrun_rank


@dataclass(frozen=True)
class RankPlace:
    """This process in a partitioned run (rank 0 of 1 without torchrun)."""

    rank: int
    world_size: int
    device: object  # torch.device
    timeout: timedelta
    cpu_threads: int


def world_size() -> int:
    """torchrun's WORLD_SIZE, 1 when torchrun did not start this process."""
    place = torchrun_rank()
    return 1 if place is None else place.world_size


def check_partition_flags(grid: tuple[int, ...] | None, timeout_s: float) -> None:
    """``--partition`` / ``--partition-timeout`` as typed (nnugen_sample and nnugen_predict); ValueError saying what
    to change."""
    if grid is not None and min(grid, default=0) < 1:
        raise ValueError(f"--partition {' '.join(map(str, grid))}: give at least 1 piece per spatial axis, e.g. "
                         "--partition 2 1 1")
    if not 0 < timeout_s < float("inf"):
        raise ValueError(f"--partition-timeout {timeout_s}: give a positive number of seconds")


def check_grid(grid: tuple[int, ...], axes: int) -> None:
    """One number of pieces per spatial axis, their product torchrun's WORLD_SIZE; ValueError saying what to change."""
    shown = " ".join(map(str, grid))
    if len(grid) != axes:
        raise ValueError(f"--partition {shown}: give one number of pieces per spatial axis ({axes} for this "
                         f"{axes}d configuration)")
    world = world_size()
    if math.prod(grid) != world:
        raise ValueError(f"--partition {shown} makes {math.prod(grid)} pieces but {world} process(es) run; start "
                         f"torchrun with --nproc_per_node {math.prod(grid)}, or change --partition to a product of "
                         f"{world}")


def check_partition(grid: tuple[int, ...], volume: tuple[int, ...], patch: tuple[int, ...]):
    """The ``VolumePartition`` of ``volume`` (the sampled volume; a latent model's latents) for ``--partition grid``,
    windows of ``patch``; ValueError saying what to change."""
    from nnugen.diffusion.volume_partition import partition_volume
    from nnugen.models.sliding_windows import nnunet_windows

    check_grid(grid, len(volume))
    return partition_volume(volume, patch, nnunet_windows(volume, patch)[0], grid)


def sampled_volume(generator, shape: tuple[int, ...], patch: tuple[int, ...]) -> tuple[tuple[int, ...],
                                                                                       tuple[int, ...]]:
    """What a partition of ``generator``'s sampling cuts, and the windows' patch: the image volume ``shape`` with
    ``patch``, or a latent model's latents with its latent patch."""
    from nnugen.models.latent_generator import LatentGenerator

    if isinstance(generator, LatentGenerator):
        return generator.latent_shape(shape), tuple(generator.latent_model.patch_size)
    return shape, patch


@contextmanager
def joined_ranks(device_name: str, timeout_s: float) -> Iterator[RankPlace]:
    """This process's place; under torchrun with more than one process, inside the process group for the block."""
    import torch

    from nnugen.devices import torch_device, usable_cpu_cores

    timeout = timedelta(seconds=timeout_s)
    place = torchrun_rank()
    if place is None or place.world_size == 1:
        yield RankPlace(0, 1, torch_device(device_name), timeout, usable_cpu_cores())
        return
    import torch.distributed as dist

    backend = check_torchrun_device(device_name)
    device = torch.device("cuda", place.local_rank) if backend == "nccl" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method="env://", timeout=timeout)
    try:
        dist.barrier()  # every rank has passed its checks before rank 0 writes anything into the output folder
        yield RankPlace(place.rank, place.world_size, device, timeout, cpu_threads_per_rank())
    finally:
        dist.destroy_process_group()


def broadcast_from_rank_zero(value, place: RankPlace):
    """Rank 0's ``value`` on every rank (a small picklable object, e.g. the list of cases to sample)."""
    if place.world_size == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sample_partitioned(generator, partition, place: RankPlace, condition, seed: int, sampler, guidance: dict,
                       callback=None, traffic: list[int] | None = None, shape: tuple[int, ...] | None = None):
    """One case (1, C, *volume) on rank 0 (None on the others): this rank samples its extent with positional noise
    and the partitioned denoiser, then rank 0 gathers the owned boxes. ``condition`` is the whole volume's one-hot
    label map (or None); each rank cuts its extent from it.

    A latent model's partition cuts its latents (``sampled_volume``): the ranks sample them so, every rank receives
    the whole latent (small: the autoencoder downsamples every axis), decodes the image of the latent box it owns
    (with the decoder's margin, so exactly as a whole decode: ``decode_box``), and rank 0 gathers the image,
    cropped to ``shape`` as ``LatentGenerator.sample`` crops it."""
    from nnugen.diffusion.halo_exchange import gather_volume
    from nnugen.diffusion.partitioned_denoiser import partitioned_denoiser
    from nnugen.diffusion.positional_noise import PositionalNoise
    from nnugen.diffusion.volume_partition import Box
    from nnugen.models.latent_generator import LatentGenerator
    from nnugen.models.sliding_windows import nnunet_windows

    me = partition.pieces[place.rank]
    local = None
    if condition is not None:
        everything = Box((0,) * len(partition.volume), partition.volume)
        local = condition[(slice(None), slice(None), *me.extent.within(everything))]
    noise = PositionalNoise(seed, partition.volume, me.extent.lo)

    def tiling(denoise):
        return partitioned_denoiser(denoise, partition, place.rank, nnunet_windows, place.timeout, traffic)

    latent = isinstance(generator, LatentGenerator)
    model = generator.latent_model if latent else generator
    x = model.sample(1, me.extent.shape, condition=local, generator=noise, sampler=sampler, device=place.device,
                     callback=callback, tiling=tiling, **guidance)
    whole = gather_volume(x, partition, place.rank, place.timeout)
    if not latent:
        return whole
    return _decoded_on_every_rank(generator, _on_every_rank(whole, x, partition.volume, place), partition, place,
                                  shape or generator.patch_size)


def _on_every_rank(whole, like, volume: tuple[int, ...], place: RankPlace):
    """Rank 0's ``whole`` (B, C, *volume) on every rank."""
    if place.world_size == 1:
        return whole
    import torch.distributed as dist

    if whole is None:
        whole = like.new_empty((*like.shape[:2], *volume))
    dist.broadcast(whole, src=0)
    return whole


def _decoded_on_every_rank(generator, z, partition, place: RankPlace, shape: tuple[int, ...]):
    """Each rank decodes the image of its owned latent box; rank 0 gathers and crops them (None elsewhere)."""
    from nnugen.diffusion.halo_exchange import gather_volume
    from nnugen.diffusion.volume_partition import Box, Piece, VolumePartition
    from nnugen.networks.chunked_decoding import decode_box

    me = partition.pieces[place.rank]
    factors = generator.autoencoder.downsampling
    image = decode_box(generator.autoencoder, z / generator.scale_factor, list(zip(me.owned.lo, me.owned.hi)))

    def scaled(box: Box) -> Box:
        return Box(tuple(v * f for v, f in zip(box.lo, factors)), tuple(v * f for v, f in zip(box.hi, factors)))

    pixels = VolumePartition(tuple(v * f for v, f in zip(partition.volume, factors)),
                             tuple(p * f for p, f in zip(partition.patch, factors)), partition.grid,
                             tuple(Piece(p.rank, scaled(p.owned), scaled(p.owned), ()) for p in partition.pieces))
    whole = gather_volume(image, pixels, place.rank, place.timeout)
    return None if whole is None else generator.cropped(whole, shape)
