"""The request behind ``nnugen_sample`` and every check on it that needs no network: the model's files and
settings, sampler, geometry, label maps and output folder, all checked before anything is loaded or written. Also the
run's record (``sampling.json``), which ``--continue`` compares with the run it finishes: a continued run must make
the same files an uninterrupted one would.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from nnugen import PLANS_IDENTIFIER
from nnugen.config import (
    CONDITIONED_MODES,
    SAMPLERS,
    SPACINGS,
    IntensitySettings,
    SamplerSettings,
    TaskSettings,
    section_of,
)
from nnugen.folders.image_check import check_image_files
from nnugen.inference.generator_loading import ModelFiles, find_model_files, generator_settings
from nnugen.inference.sample_output_folder import (
    check_dataset_folder,
    check_folders,
    check_output_folder,
    check_part_files,
    check_run_folder,
    identity_of_record,
)
from nnugen.inference.sample_writing import SIMPLEITK_FILE_ENDINGS, SampleGeometry, output_layout, reference_geometry
from nnugen.inference.sampling_record import read_sampling_record
from nnugen.seeding import case_seed

SIZES = ("whole", "patch")
"""``--size``'s named sizes; otherwise the size is one number per spatial axis (``--size Z Y X``)."""
DATASET_NAME = re.compile(r"^Dataset\d{3}_[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class SampleRequest:
    """What to generate; sampler settings left at None keep the model's plans. ``size``: ``whole`` = the plan's
    median image size (windowed denoising beyond the patch), ``patch`` = the training patch, or a shape (one size per
    spatial axis of the configuration, in the plan's axis order, each at least the patch), denoised in overlapping
    windows as ``whole``. ``partition``: pieces per spatial axis (their product the number of processes torchrun
    started); each process denoises one slab of every volume, with noise drawn per voxel position
    (``nnugen.diffusion.positional_noise``), so the volume does not depend on the partition."""

    dataset: str
    configuration: str
    num_cases: int
    output_folder: Path
    task: str = "ddpm"
    fold: str = "0"
    checkpoint: str = "checkpoint_final.pth"
    plans: str = PLANS_IDENTIFIER
    """nnU-Net's plans identifier (``-p``): the model folder is ``<Trainer>__<plans>__<configuration>``."""
    sampler: str | None = None
    steps: int | None = None
    eta: float | None = None
    spacing: str | None = None
    guidance_scale: float | None = None
    seed: int = 0
    labels_from: Path | None = None
    as_dataset: str | None = None
    size: str | tuple[int, ...] = "whole"
    device: str = "cuda"
    progress: bool = False
    overwrite: bool = False
    continue_sampling: bool = False
    """Finish an interrupted run in ``output_folder``: cases whose files are all there are kept, the others sampled;
    the run's ``sampling.json`` must match this request (same model, sampler, seed, cases)."""
    num_parts: int = 1
    part_id: int = 0
    partition: tuple[int, ...] | None = None
    """Pieces per spatial axis; their product must be torchrun's WORLD_SIZE (1 without torchrun, e.g. ``1 1 1``).
    Every case is then sampled by all processes together with positional noise. None: one process, the
    ``torch.Generator`` stream of a case's seed (the files of earlier versions)."""
    partition_timeout: float = 600.0
    """Seconds a rank of a partitioned run waits for its neighbours before it stops with an error."""

    @property
    def cases(self) -> list[str]:
        """The names of this part's cases (all cases when the run is not split)."""
        return [f"case_{k:04d}" for k in range(self.part_id, self.num_cases, self.num_parts)]

    @property
    def metadata_name(self) -> str:
        return "sampling.json" if self.num_parts == 1 else f"sampling_part{self.part_id}of{self.num_parts}.json"


@dataclass(frozen=True)
class SamplePlan:
    """A checked request: the model's files and settings, the sampler, the geometry and the label maps to use."""

    files: ModelFiles
    settings: TaskSettings
    intensity: IntensitySettings
    sampler: SamplerSettings
    guidance_scale: float
    geometry: SampleGeometry
    sampling_shape: tuple[int, ...]
    """The shape the sampler runs at: ``geometry.shape`` grown to at least the patch (the network needs whole
    patches); the result is centre-cropped back."""
    patch_size: tuple[int, ...]
    label_values: tuple[int, ...]
    label_files: tuple[Path, ...]


def _check_values(request: SampleRequest) -> None:
    """The checks of the request's own values (no file read); ValueError naming the flag."""
    if request.num_cases < 1:
        raise ValueError(f"N = {request.num_cases}: generate at least 1 case")
    if isinstance(request.size, str) and request.size not in SIZES:
        raise ValueError(f"--size {request.size}: choose whole (the plan's median image size), patch, or one size "
                         "per spatial axis (e.g. --size 128 160 112)")
    if request.sampler is not None and request.sampler not in SAMPLERS:
        raise ValueError(f"--sampler {request.sampler}: choose one of {', '.join(SAMPLERS)}")
    if request.steps is not None and request.steps < 1:
        raise ValueError(f"--steps {request.steps}: must be at least 1")
    if request.eta is not None and not 0.0 <= request.eta <= 1.0:
        raise ValueError(f"--eta {request.eta}: must be in [0, 1] (0 = deterministic DDIM, 1 = DDPM-like)")
    if request.spacing is not None and request.spacing not in SPACINGS:
        raise ValueError(f"--spacing {request.spacing}: choose one of {', '.join(SPACINGS)}")
    if request.guidance_scale is not None and not 0.0 <= request.guidance_scale <= 100.0:
        raise ValueError(f"--guidance-scale {request.guidance_scale}: must be in [0, 100] (1 = no guidance)")
    if request.as_dataset is not None and not DATASET_NAME.match(request.as_dataset):
        raise ValueError(f"--as-dataset {request.as_dataset}: name it like nnU-Net's datasets, DatasetNNN_Name "
                         "(three digits, e.g. Dataset950_Synthetic)")
    if request.num_parts < 1 or not 0 <= request.part_id < request.num_parts:
        raise ValueError(f"-part_id {request.part_id} / -num_parts {request.num_parts}: need num_parts >= 1 and "
                         "0 <= part_id < num_parts")
    from nnugen.inference.partitioned_sampling import check_partition_flags

    check_partition_flags(request.partition, request.partition_timeout)
    if request.continue_sampling and request.overwrite:
        raise ValueError("--continue keeps the cases already written and --overwrite replaces them: pass one of "
                         "the two")


def check_request(request: SampleRequest) -> SamplePlan:
    """Every check that needs no network, before anything is loaded or written; ValueError saying what to change.
    Its last step marks an ``--as-dataset`` folder as this run's (``sample_output_folder.RUN_MARKER``)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    _check_values(request)
    check_output_folder(Path(request.output_folder), request.overwrite or request.continue_sampling
                         or request.num_parts > 1)  # parts: check_run_folder below, once the run is known
    files = find_model_files(request.dataset, request.configuration, request.task, request.fold, request.checkpoint,
                             request.plans)
    check_folders(request, files.model_folder)
    file_ending = files.dataset_json["file_ending"]
    if file_ending not in SIMPLEITK_FILE_ENDINGS:
        raise ValueError(f"this dataset's file ending is {file_ending}; nnugen_sample writes "
                         f"{', '.join(SIMPLEITK_FILE_ENDINGS)} only")
    settings = generator_settings(files)
    mode = settings.generation.mode
    _check_labels_and_mode(request, mode)
    changes = {"name": request.sampler, "steps": request.steps, "eta": request.eta, "spacing": request.spacing}
    sampler = replace(settings.sampler, **{k: v for k, v in changes.items() if v is not None})
    configuration = PlansManager(files.plans).get_configuration(files.configuration)
    patch = tuple(int(p) for p in configuration.patch_size)
    median = tuple(int(round(s)) for s in configuration.median_image_size_in_voxels)
    shape = _sampled_shape(request.size, patch, median)
    geometry = SampleGeometry.from_plans(files.plans, configuration.configuration, shape,
                                         reference_geometry(files.dataset_name, files.plans))
    label_values = _label_values(files.dataset_json)
    label_files = () if request.labels_from is None else _label_files(Path(request.labels_from), request.num_cases,
                                                                       file_ending)
    _check_label_images(label_files)
    for path in label_files:
        _check_label_values(path, geometry.read_label(path), label_values)
    intensity = section_of(configuration.configuration, files.configuration).intensity
    if len(intensity.channels) != len(files.dataset_json["channel_names"]):
        raise ValueError(f"the plans' intensity map has {len(intensity.channels)} channel(s), the dataset "
                         f"{len(files.dataset_json['channel_names'])}; re-run nnugen_plan and train again")
    guidance = settings.generation.guidance_scale if request.guidance_scale is None else request.guidance_scale
    plan = SamplePlan(files, settings, intensity, sampler, guidance, geometry,
                      tuple(max(s, p) for s, p in zip(shape, patch)), patch, label_values, label_files)
    if request.partition is not None:
        from nnugen.inference.partitioned_sampling import check_partition

        volume, windows = plan.sampling_shape, patch
        if files.task.section == "ldm":  # the partition cuts the latents (partitioned_sampling.sampled_volume)
            from nnugen.networks.autoencoder import downsampling, latent_patch, latent_sampling_shape

            section = section_of(configuration.configuration, files.configuration)
            strides = section.task("autoencoder").autoencoder.strides
            windows = latent_patch(patch, strides)
            volume = latent_sampling_shape(plan.sampling_shape, downsampling(strides), windows)
        check_partition(request.partition, volume, windows)
    identity = run_identity(request, plan)
    if request.num_parts > 1:
        check_run_folder(request, identity)
        check_part_files(request, file_ending)
    check_dataset_folder(request, identity)
    if request.continue_sampling:
        _check_same_run(request, plan)
    return plan




def parse_size(values: list[str]) -> str | tuple[int, ...]:
    """``--size``'s words: ``whole``, ``patch`` or one positive integer per spatial axis; ValueError otherwise."""
    if len(values) == 1 and values[0] in SIZES:
        return values[0]
    try:
        shape = tuple(int(v) for v in values)
    except ValueError:
        raise ValueError(f"--size {' '.join(values)}: choose whole, patch, or one integer per spatial axis (e.g. "
                         "--size 128 160 112)") from None
    if not 2 <= len(shape) <= 3 or min(shape) < 1:
        raise ValueError(f"--size {' '.join(values)}: give 3 positive sizes for a 3d configuration, 2 for 2d (e.g. "
                         "--size 128 160 112)")
    return shape


def _sampled_shape(size: str | tuple[int, ...], patch: tuple[int, ...], median: tuple[int, ...]) -> tuple[int, ...]:
    """The volume shape a ``--size`` asks for; a given shape must have the patch's axes, each at least the patch."""
    if size == "patch":
        return patch
    if size == "whole":
        return median
    if len(size) != len(patch):
        raise ValueError(f"--size {' '.join(map(str, size))}: this configuration is {len(patch)}d (patch "
                         f"{' '.join(map(str, patch))}); give {len(patch)} sizes")
    if any(s < p for s, p in zip(size, patch)):
        raise ValueError(f"--size {' '.join(map(str, size))}: every axis must be at least the training patch "
                         f"{' '.join(map(str, patch))} (in the plan's axis order)")
    return tuple(size)


def run_identity(request: SampleRequest, plan: SamplePlan) -> dict:
    """What makes parts one run: ``IDENTITY`` of ``metadata`` and ``--as-dataset``, as JSON reads them back."""
    return identity_of_record(json.loads(json.dumps(metadata(request, plan))))


def _check_label_images(files: tuple[Path, ...]) -> None:
    """``--labels-from``: the check ``nnugen_check`` runs (NaN / Inf, cut-off or corrupt files), every bad map named."""
    problems = check_image_files(files)
    if problems:
        raise ValueError(f"{len({p.path for p in problems})} label map(s) in --labels-from cannot be used, nothing "
                         f"was written: {'; '.join(map(str, problems))}")



def _check_labels_and_mode(request: SampleRequest, mode: str) -> None:
    if mode in CONDITIONED_MODES and request.labels_from is None:
        raise ValueError(f"this model generates images for given label maps (mode {mode}); pass them with "
                         "--labels-from DIR")
    if mode not in CONDITIONED_MODES and request.labels_from is not None:
        raise ValueError(f"--labels-from is for label-conditioned models; this model's mode is {mode}")
    if mode not in CONDITIONED_MODES and request.guidance_scale not in (None, 1.0):
        raise ValueError(f"--guidance-scale is for label-conditioned models; this model's mode is {mode}")
    if request.as_dataset is not None and mode == "image":
        raise ValueError("--as-dataset needs labels, but this model generates images only (mode image); train it in "
                         "mode joint or label_conditioned")


def _label_values(dataset_json: dict) -> tuple[int, ...]:
    values = list(dataset_json["labels"].values())
    if not all(isinstance(v, int) for v in values):
        raise ValueError("region-based labels (lists of values in dataset.json) are not supported by generation")
    return tuple(sorted(values))


def _label_files(folder: Path, count: int, file_ending: str) -> tuple[Path, ...]:
    if not folder.is_dir():
        raise ValueError(f"--labels-from {folder} is not a folder")
    found = sorted(p for p in folder.iterdir() if p.name.endswith(file_ending) and not p.name.startswith("."))
    if len(found) < count:
        raise ValueError(f"--labels-from {folder} holds {len(found)} label map(s) ending in {file_ending}, fewer than "
                         f"the {count} cases asked for")
    return tuple(found[:count])


def _check_label_values(path: Path, label: np.ndarray, label_values: tuple[int, ...]) -> None:
    unknown = sorted(set(np.unique(label).tolist()) - set(label_values))
    if unknown:
        raise ValueError(f"{path} holds label value(s) {unknown} that are not in the dataset's labels {label_values}")


def case_index(case: str) -> int:
    return int(case.rsplit("_", 1)[1])


RECIPE = ("model_folder", "checkpoint", "trainer", "configuration", "mode", "sampler", "guidance_scale", "seed",
          "num_cases", "size", "file_shape", "num_parts", "part_id", "cases", "noise")
"""The entries of sampling.json that decide which files a run writes; ``--continue`` needs them unchanged (the
partition itself may change: positional noise gives the same volume, to rounding, for any partition)."""
NOISES = {False: "torch.Generator of the case seed", True: "positional (Philox per voxel position and draw)"}
RECORD_DEFAULTS = {"noise": NOISES[False]}
"""What an entry of RECIPE meant in a sampling.json written before the entry existed."""


def _check_same_run(request: SampleRequest, plan: SamplePlan) -> None:
    """``--continue``: the folder's record of the interrupted run must describe this run (nothing to compare in a
    new or empty folder)."""
    folder = Path(request.output_folder)
    record = folder / request.metadata_name
    if not record.is_file():
        _, images, _ = output_layout(folder, request.as_dataset)
        if images.is_dir() and any(images.iterdir()):
            raise ValueError(f"{folder} holds files but no {request.metadata_name}: it is not a run of nnugen_sample "
                             "to continue; choose a new folder or pass --overwrite")
        return
    earlier = read_sampling_record(record, "--continue cannot tell how the earlier run sampled: choose a new folder "
                                           "or pass --overwrite")
    now = metadata(request, plan)
    if earlier["request"].get("as_dataset") != request.as_dataset:
        raise ValueError(f"{record} was written by a run with another --as-dataset; run with the same arguments to "
                         "continue it, or choose a new folder")
    for key in RECIPE:
        if earlier.get(key, RECORD_DEFAULTS.get(key)) != now[key]:
            shown = "case list" if key == "cases" else key
            raise ValueError(f"{record} says the earlier run used {shown} "
                             f"{_short(earlier.get(key, RECORD_DEFAULTS.get(key)))}, this one "
                             f"{_short(now[key])}; run with the same arguments to continue it, or choose a new folder")


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def metadata(request: SampleRequest, plan: SamplePlan) -> dict:
    """sampling.json: everything needed to make the same files again (JSON only, never pickle)."""
    from nnugen import __version__

    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(request).items()}
    cases = request.cases
    seeds = [case_seed(request.seed, case) for case in cases]
    return {
        "nnugen_version": __version__,
        "model_folder": str(plan.files.model_folder),
        "checkpoint": str(plan.files.checkpoint),
        "trainer": plan.files.trainer_name,
        "configuration": plan.files.configuration,
        "mode": plan.settings.generation.mode,
        "sampler": {"name": plan.sampler.name, "steps": plan.sampler.steps, "eta": plan.sampler.eta,
                    "spacing": plan.sampler.spacing},
        "guidance_scale": plan.guidance_scale,
        "seed": request.seed,
        "num_cases": request.num_cases,
        "size": request.size if isinstance(request.size, str) else list(request.size),
        "file_shape": list(plan.geometry.file_shape),
        "spacing": list(plan.geometry.properties()["sitk_stuff"]["spacing"]),
        "geometry_source": plan.geometry.reference.source,
        "intensity_units": "original (the plans' intensity map: exact for CT, dataset-level for z-scored MR)",
        "num_parts": request.num_parts,
        "part_id": request.part_id,
        "noise": NOISES[request.partition is not None],
        "partition": None if request.partition is None else list(request.partition),
        "cases": [{"name": c, "seed": s,
                   **({"label_from": str(plan.label_files[case_index(c)])} if plan.label_files else {})}
                  for c, s in zip(cases, seeds)],
        "request": arguments,
    }
