"""``sample``: the Python API behind ``nnugen_sample``. N synthetic cases from a trained generator, written in the
dataset's file format, units and geometry (see sample_writing), with previews and a ``sampling.json`` of how they
were made; optionally as a complete nnU-Net raw dataset (imagesTr, labelsTr, dataset.json) to train on.

Case k is sampled with the seed ``case_seed(seed, "case_kkkk")``, so any subset of the cases, or a rerun, gives the
same files. ``num_parts`` / ``part_id`` split the cases as nnUNetv2_predict does (case k belongs to part
k % num_parts): the parts together write exactly the files of one unsplit run, into the same folder, each with its
own ``sampling_partIofP.json``. Every check runs before anything is written; every file is written atomically.

Example::

    >>> request = SampleRequest(dataset="901", configuration="3d", num_cases=4, output_folder=Path("synthetic"),
    ...                         device="cpu", as_dataset="Dataset950_Synth")
    >>> written = sample(request)  # doctest: +SKIP
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from nnugen.config import CONDITIONED_MODES, SAMPLERS, IntensitySettings, SamplerSettings, TaskSettings, section_of
from nnugen.inference.generator_loading import ModelFiles, find_model_files, load_generator, task_settings, torch_device
from nnugen.inference.sample_writing import SIMPLEITK_FILE_ENDINGS, SampleGeometry, output_layout, reference_geometry
from nnugen.seeding import case_seed

SIZES = ("whole", "patch")
DATASET_NAME = re.compile(r"^Dataset\d{3}_[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class SampleRequest:
    """What to generate; sampler settings left at None keep the model's plans. ``size``: ``whole`` = the plan's
    median image size (windowed denoising beyond the patch), ``patch`` = the training patch."""

    dataset: str
    configuration: str
    num_cases: int
    output_folder: Path
    task: str = "ddpm"
    fold: str = "0"
    checkpoint: str = "checkpoint_final.pth"
    sampler: str | None = None
    steps: int | None = None
    eta: float | None = None
    guidance_scale: float | None = None
    seed: int = 0
    labels_from: Path | None = None
    as_dataset: str | None = None
    size: str = "whole"
    device: str = "cuda"
    progress: bool = False
    overwrite: bool = False
    num_parts: int = 1
    part_id: int = 0

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


def check_request(request: SampleRequest) -> SamplePlan:
    """Every check that needs no network, before anything is loaded or written; ValueError saying what to change."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    if request.num_cases < 1:
        raise ValueError(f"N = {request.num_cases}: generate at least 1 case")
    if request.size not in SIZES:
        raise ValueError(f"--size {request.size}: choose whole (the plan's median image size) or patch")
    if request.sampler is not None and request.sampler not in SAMPLERS:
        raise ValueError(f"--sampler {request.sampler}: choose one of {', '.join(SAMPLERS)}")
    if request.steps is not None and request.steps < 1:
        raise ValueError(f"--steps {request.steps}: must be at least 1")
    if request.eta is not None and not 0.0 <= request.eta <= 1.0:
        raise ValueError(f"--eta {request.eta}: must be in [0, 1] (0 = deterministic DDIM, 1 = DDPM-like)")
    if request.guidance_scale is not None and not 0.0 <= request.guidance_scale <= 100.0:
        raise ValueError(f"--guidance-scale {request.guidance_scale}: must be in [0, 100] (1 = no guidance)")
    if request.as_dataset is not None and not DATASET_NAME.match(request.as_dataset):
        raise ValueError(f"--as-dataset {request.as_dataset}: name it like nnU-Net's datasets, DatasetNNN_Name "
                         "(three digits, e.g. Dataset950_Synthetic)")
    if request.num_parts < 1 or not 0 <= request.part_id < request.num_parts:
        raise ValueError(f"-part_id {request.part_id} / -num_parts {request.num_parts}: need num_parts >= 1 and "
                         "0 <= part_id < num_parts")
    if request.num_parts == 1:
        _check_output_folder(Path(request.output_folder), request.overwrite)
    files = find_model_files(request.dataset, request.configuration, request.task, request.fold, request.checkpoint)
    file_ending = files.dataset_json["file_ending"]
    if file_ending not in SIMPLEITK_FILE_ENDINGS:
        raise ValueError(f"this dataset's file ending is {file_ending}; nnugen_sample writes "
                         f"{', '.join(SIMPLEITK_FILE_ENDINGS)} only")
    if request.num_parts > 1:
        _check_part_files(request, file_ending)
    settings = task_settings(files)
    mode = settings.generation.mode
    _check_labels_and_mode(request, mode)
    changes = {"name": request.sampler, "steps": request.steps, "eta": request.eta}
    sampler = replace(settings.sampler, **{k: v for k, v in changes.items() if v is not None})
    configuration = PlansManager(files.plans).get_configuration(files.configuration)
    patch = tuple(int(p) for p in configuration.patch_size)
    median = tuple(int(round(s)) for s in configuration.median_image_size_in_voxels)
    shape = patch if request.size == "patch" else median
    geometry = SampleGeometry.from_plans(files.plans, configuration.configuration, shape,
                                         reference_geometry(files.dataset_name, files.plans))
    label_values = _label_values(files.dataset_json)
    label_files = () if request.labels_from is None else _label_files(Path(request.labels_from), request.num_cases,
                                                                       file_ending)
    for path in label_files:
        _check_label_values(path, geometry.read_label(path), label_values)
    intensity = section_of(configuration.configuration, files.configuration).intensity
    if len(intensity.channels) != len(files.dataset_json["channel_names"]):
        raise ValueError(f"the plans' intensity map has {len(intensity.channels)} channel(s), the dataset "
                         f"{len(files.dataset_json['channel_names'])}; re-run nnugen_plan and train again")
    guidance = settings.generation.guidance_scale if request.guidance_scale is None else request.guidance_scale
    return SamplePlan(files, settings, intensity, sampler, guidance, geometry,
                      tuple(max(s, p) for s, p in zip(shape, patch)), patch, label_values, label_files)


def _check_output_folder(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; give a folder for the samples")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise ValueError(f"{folder} is not empty; choose a new folder or pass --overwrite to replace files in it")


def _check_part_files(request: SampleRequest, file_ending: str) -> None:
    """Parts share the output folder: each may write into it, but never over files already there (its own from an
    earlier run) unless --overwrite."""
    folder = Path(request.output_folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; give a folder for the samples")
    _, images, _ = output_layout(folder, request.as_dataset)
    own = [folder / request.metadata_name, *(images / f"{case}_0000{file_ending}" for case in request.cases)]
    existing = [path for path in own if path.exists()]
    if existing and not request.overwrite:
        raise ValueError(f"{existing[0]} already exists (part {request.part_id} of {request.num_parts}); choose a new "
                         "folder or pass --overwrite to replace this part's files")


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


def sample(request: SampleRequest) -> list[Path]:
    """Generate and write the cases; returns the files written. Nothing is written if a check fails."""
    plan = check_request(request)
    import torch

    from nnugen.inference.sample_writing import SampleWriter
    from nnugen.models.intensity_map import IntensityMap

    device = torch_device(request.device)
    if device.type == "cpu":
        import multiprocessing

        torch.set_num_threads(multiprocessing.cpu_count())
    generator = load_generator(plan.files, device)
    writer = SampleWriter(Path(request.output_folder), plan.files.dataset_json, plan.geometry,
                          IntensityMap(plan.intensity), request.as_dataset)
    cases = request.cases
    seeds = [case_seed(request.seed, case) for case in cases]
    _log(request, plan)
    from tqdm import tqdm

    written = [writer.write_metadata(_metadata(request, plan, cases, seeds), request.metadata_name)]
    for case, seed in tqdm(list(zip(cases, seeds)), desc="cases", disable=not request.progress, dynamic_ncols=True):
        label = plan.geometry.read_label(plan.label_files[_index(case)]) if plan.label_files else None
        volume = _sample_case(generator, plan, label, torch.Generator().manual_seed(seed), device, request.progress)
        written += writer.write_case(case, volume, generator.image_channels, plan.label_values)
    finished = writer.finish([f"case_{k:04d}" for k in range(request.num_cases)])
    if request.as_dataset and not finished:
        print(f"nnugen_sample: part {request.part_id} done; dataset.json is written by the part that ends last")
    return written + finished


def _index(case: str) -> int:
    return int(case.rsplit("_", 1)[1])


def _log(request: SampleRequest, plan: SamplePlan) -> None:
    geometry, sampler = plan.geometry, plan.sampler
    size = "the plan's median image size" if request.size == "whole" else "the training patch size"
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


def _sample_case(generator, plan: SamplePlan, label: np.ndarray | None, torch_generator, device,
                 progress: bool):
    """(C_gen (+ K condition), *shape) in [-1, 1] on the CPU, cropped from a sample at ``plan.sampling_shape``."""
    import torch
    from tqdm import tqdm

    from nnugen.trainers.nnugen_generative_trainer import one_hot_pm1

    condition = None
    if label is not None:
        indices = np.searchsorted(plan.label_values, _pad(label, plan.sampling_shape))
        condition = one_hot_pm1(torch.from_numpy(indices)[None, None].to(device), len(plan.label_values))
    steps = min(plan.sampler.steps, plan.settings.diffusion.timesteps)
    with tqdm(total=steps, desc="steps", leave=False, disable=not progress, dynamic_ncols=True) as bar:
        guidance = {} if condition is None else {"guidance_scale": plan.guidance_scale}  # unconditional: none
        x = generator.sample(1, plan.sampling_shape, condition=condition, generator=torch_generator,
                             sampler=plan.sampler, device=device, callback=lambda *_: bar.update(), **guidance)
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


def _metadata(request: SampleRequest, plan: SamplePlan, cases: list[str], seeds: list[int]) -> dict:
    """sampling.json: everything needed to make the same files again (JSON only, never pickle)."""
    from nnugen import __version__

    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(request).items()}
    return {
        "nnugen_version": __version__,
        "model_folder": str(plan.files.model_folder),
        "checkpoint": str(plan.files.checkpoint),
        "trainer": plan.files.trainer_name,
        "configuration": plan.files.configuration,
        "mode": plan.settings.generation.mode,
        "sampler": {"name": plan.sampler.name, "steps": plan.sampler.steps, "eta": plan.sampler.eta},
        "guidance_scale": plan.guidance_scale,
        "seed": request.seed,
        "num_cases": request.num_cases,
        "size": request.size,
        "file_shape": list(plan.geometry.file_shape),
        "spacing": list(plan.geometry.properties()["sitk_stuff"]["spacing"]),
        "geometry_source": plan.geometry.reference.source,
        "intensity_units": "original (the plans' intensity map: exact for CT, dataset-level for z-scored MR)",
        "num_parts": request.num_parts,
        "part_id": request.part_id,
        "cases": [{"name": c, "seed": s,
                   **({"label_from": str(plan.label_files[_index(c)])} if plan.label_files else {})}
                  for c, s in zip(cases, seeds)],
        "request": arguments,
    }
