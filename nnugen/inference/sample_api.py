"""``sample``: the Python API behind ``nnugen_sample``. N synthetic cases from a trained generator, written in the
dataset's file format, units and geometry (see sample_writing), with previews and a ``sampling.json`` of how they
were made; optionally as a complete nnU-Net raw dataset (imagesTr, labelsTr, dataset.json) to train on.

Case k is sampled with the seed ``case_seed(seed, "case_kkkk")``, so any subset of the cases, or a rerun, gives the
same files. The seed drives a ``torch.Generator`` on the sampling device, so the noise is drawn where the model runs
(not on the CPU and copied at every step); CUDA and CPU generators give different streams, so a seed reproduces a
case on the same device type (a CPU run reproduces CPU files, a GPU run GPU files). ``num_parts`` / ``part_id``
split the cases as nnUNetv2_predict does (case k belongs to part k % num_parts): the parts together write exactly
the files of one unsplit run, into the same folder, each with its own ``sampling_partIofP.json``. Every check runs
before anything is written; every file is written atomically.

Example::

    >>> request = SampleRequest(dataset="901", configuration="3d", num_cases=4, output_folder=Path("synthetic"),
    ...                         device="cpu", as_dataset="Dataset950_Synth")
    >>> written = sample(request)  # doctest: +SKIP
"""


from __future__ import annotations

from pathlib import Path

import numpy as np

from nnugen.devices import torch_device, usable_cpu_cores
from nnugen.inference.generator_loading import load_generator
from nnugen.inference.sample_output_folder import claim_dataset_folder
from nnugen.inference.sample_request import (
    SamplePlan,
    SampleRequest,
    case_index,
    check_request,
    metadata,
    run_identity,
)
from nnugen.seeding import case_seed

__all__ = ["SampleRequest", "sample"]


def sample(request: SampleRequest) -> list[Path]:
    """Generate and write the cases; returns the files written (by rank 0 of a ``--partition`` run; the other
    ranks return []). Nothing is written if a check fails."""
    plan = check_request(request)
    if request.partition is None:
        return _sample_cases(request, plan, None)
    from nnugen.inference.partitioned_sampling import joined_ranks

    with joined_ranks(request.device, request.partition_timeout) as place:
        return _sample_cases(request, plan, place)


def _sample_cases(request: SampleRequest, plan: SamplePlan, place) -> list[Path]:
    """The cases of this run; ``place``: this rank of a partitioned run (None: one process on its own)."""
    import torch

    from nnugen.inference.partitioned_sampling import broadcast_from_rank_zero, check_partition, sampled_volume
    from nnugen.inference.sample_writing import SampleWriter
    from nnugen.models.intensity_map import IntensityMap

    device = torch_device(request.device) if place is None else place.device
    if device.type == "cpu":
        torch.set_num_threads(usable_cpu_cores() if place is None else place.cpu_threads)
    writes = place is None or place.rank == 0
    generator = load_generator(plan.files, device)
    partition = None if place is None else check_partition(
        request.partition, *sampled_volume(generator, plan.sampling_shape, plan.patch_size))
    writer = SampleWriter(Path(request.output_folder), plan.files.dataset_json, plan.geometry,
                          IntensityMap(plan.intensity), request.as_dataset)
    cases = request.cases
    if writes:
        _say_removed(writer.remove_stale_temporaries())
        if request.continue_sampling:
            cases = [case for case in cases if not writer.case_complete(case, generator.image_channels)]
            print(f"nnugen_sample: --continue: {len(request.cases) - len(cases)} case(s) already complete, "
                  f"{len(cases)} to sample")
        _log(request, plan)
        if partition is not None:
            print(f"nnugen_sample: partitioned {' x '.join(map(str, partition.grid))} over {partition.world_size} "
                  f"process(es); noise drawn per voxel position; rank 0 holds {partition.pieces[0].extent.shape} "
                  f"(owns {partition.pieces[0].owned.shape}) and writes the files")
    if place is not None:
        cases = broadcast_from_rank_zero(cases, place)  # every rank samples the cases rank 0 will write
    seeds = [case_seed(request.seed, case) for case in cases]
    from tqdm import tqdm

    written = []
    if writes:
        claim_dataset_folder(request, run_identity(request, plan))  # the marker first: --as-dataset's folder is ours
        written.append(writer.write_metadata(metadata(request, plan), request.metadata_name))
    bars = request.progress and writes
    for case, seed in tqdm(list(zip(cases, seeds)), desc="cases", disable=not bars, dynamic_ncols=True):
        label = plan.geometry.read_label(plan.label_files[case_index(case)]) if plan.label_files else None
        if partition is None:
            source = torch.Generator(device=device).manual_seed(seed)
        else:
            source = (partition, place, seed)
        volume = _sample_case(generator, plan, label, source, device, bars)
        if writes:
            written += writer.write_case(case, volume, generator.image_channels, plan.label_values)
    if not writes:
        return []
    finished = writer.finish([f"case_{k:04d}" for k in range(request.num_cases)])
    if request.as_dataset and not finished:
        print(f"nnugen_sample: part {request.part_id} done; dataset.json is written by the part that ends last")
    return written + finished


def _say_removed(removed: list[Path]) -> None:
    if removed:
        print(f"nnugen_sample: removed {len(removed)} temporary file(s) an interrupted run left: "
              f"{', '.join(p.name for p in removed)}")


def _log(request: SampleRequest, plan: SamplePlan) -> None:
    geometry, sampler = plan.geometry, plan.sampler
    size = {"whole": "the plan's median image size", "patch": "the training patch size"}.get(request.size,
                                                                                          "the size asked for")
    part = f" (part {request.part_id} of parts 0-{request.num_parts - 1}: {len(request.cases)} case(s))" \
        if request.num_parts > 1 else ""
    print(f"nnugen_sample: {request.num_cases} case(s){part} of {geometry.file_shape} voxels ({size}), spacing "
          f"{geometry.properties()['sitk_stuff']['spacing']}, from {plan.files.checkpoint}")
    if plan.sampling_shape != plan.patch_size:
        print(f"nnugen_sample: whole-volume sampling at {plan.sampling_shape} (network layout): the x0 estimates of "
              f"overlapping {plan.patch_size} windows are averaged at every step")
    if plan.sampling_shape != geometry.shape:
        print(f"nnugen_sample: the network needs whole patches: sampled at {plan.sampling_shape}, centre-cropped to "
              f"{geometry.shape}")
    eta = f", eta {sampler.eta}" if sampler.name == "ddim" else ""
    print(f"nnugen_sample: sampler {sampler.name}, {sampler.steps} steps{eta}, seed {request.seed}; origin and "
          f"direction from {geometry.reference.source}")


def _sample_case(generator, plan: SamplePlan, label: np.ndarray | None, source, device, progress: bool):
    """(C_gen (+ K condition), *shape) in [-1, 1] on the CPU, cropped from a sample at ``plan.sampling_shape``.
    ``source``: the case's ``torch.Generator``, or (partition, rank place, case seed) for a partitioned run, whose
    ranks other than 0 return None."""
    import torch
    from tqdm import tqdm

    from nnugen.diffusion import one_hot

    condition = None
    if label is not None:
        indices = np.searchsorted(plan.label_values, _pad(label, plan.sampling_shape))
        condition = one_hot(torch.from_numpy(indices)[None, None].to(device), len(plan.label_values),
                            diffusion_space=True, clamp=True)
    steps = min(plan.sampler.steps, plan.settings.diffusion.timesteps)
    with tqdm(total=steps, desc="steps", leave=False, disable=not progress, dynamic_ncols=True) as bar:
        guidance = {} if condition is None else {"guidance_scale": plan.guidance_scale}  # unconditional: none
        if isinstance(source, tuple):
            from nnugen.inference.partitioned_sampling import sample_partitioned

            partition, place, seed = source
            x = sample_partitioned(generator, partition, place, condition, seed, plan.sampler, guidance,
                                   callback=lambda *_: bar.update(), shape=plan.sampling_shape)
            if x is None:
                return None
        else:
            x = generator.sample(1, plan.sampling_shape, condition=condition, generator=source, sampler=plan.sampler,
                                 device=device, callback=lambda *_: bar.update(), **guidance)
    if condition is not None:
        x = torch.cat([x, condition.to(x.dtype)], dim=1)
    return _crop(x[0].float().cpu(), plan.geometry.shape)


def _pad(label: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Pad a label map with background (0) to ``shape``, centred (the inverse of _crop)."""
    before = [(s - n) // 2 for s, n in zip(shape, label.shape)]
    return np.pad(label, [(b, s - n - b) for b, s, n in zip(before, shape, label.shape)])


def _crop(x, shape: tuple[int, ...]):
    starts = [(s - n) // 2 for s, n in zip(x.shape[1:], shape)]
    return x[(slice(None), *(slice(b, b + n) for b, n in zip(starts, shape)))]
