"""``predict``: the Python API behind ``nnugen_predict``. nnU-Net's predictor does the work (preprocessing, sliding
window with Gaussian weighting, folds, export); nnugen adds the sampler settings, a per-case seed
(``case_seed(seed, case)``, so any split with ``-num_parts`` or a resumed run writes the same files), uncertainty
maps, atomic writes and checks of the input before anything is written. For an anomaly model
(``NnugenAnomalyTrainer``) it also writes the anomaly map and the counterfactual of each case
(``anomaly_prediction.py``).

Example::

    >>> from pathlib import Path
    >>> request = PredictRequest(Path("imagesTs"), Path("out"), model_folder=Path("results/Dataset901_Tiny/"
    ...     "NnugenDiffSegTrainer__nnugenPlans__3d_fullres"), device="cpu", seeds=4, save_uncertainty=True)
    >>> written = predict(request)  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from nnugen import PLANS_IDENTIFIER
from nnugen.config import SAMPLERS, SPACINGS, AnomalySettings
from nnugen.devices import check_device_name
from nnugen.folders.dataset_folders import InputError, dataset_name
from nnugen.folders.image_check import check_image_files
from nnugen.folders.model_folder import ModelFolder
from nnugen.folders.overlap import overlap
from nnugen.inference.input_cases import InputCase, find_cases
from nnugen.tasks import TASKS, task_of_trainer

DIFFSEG_TRAINER = TASKS["seg"].trainer


@dataclass(frozen=True)
class PredictRequest:
    """What to predict and how; the names follow ``nnUNetv2_predict``. The model is ``model_folder`` or, without it,
    ``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>``. Sampler settings left at None keep the ones
    in the model's plans."""

    input_folder: Path
    output_folder: Path
    model_folder: Path | None = None
    dataset: str | None = None
    trainer: str = DIFFSEG_TRAINER
    plans: str = PLANS_IDENTIFIER
    configuration: str | None = None
    folds: tuple[int | str, ...] | None = None
    """None: every fold_X with the checkpoint."""
    checkpoint: str = "checkpoint_final.pth"
    step_size: float = 0.5
    mirroring: bool = True
    verbose: bool = False
    save_probabilities: bool = False
    continue_prediction: bool = False
    num_processes_preprocessing: int = 3
    num_processes_export: int = 3
    previous_stage_predictions: Path | None = None
    num_parts: int = 1
    part_id: int = 0
    device: str = "cuda"
    progress_bar: bool = True
    on_device: bool = True
    sampler: str | None = None
    steps: int | None = None
    seeds: int | None = None
    eta: float | None = None
    spacing: str | None = None
    shared_first_step: bool | None = None
    seed: int = 0
    save_uncertainty: bool = False
    strengths: tuple[float, ...] | None = None
    """Anomaly models: the noise strengths of the counterfactuals (default: the plans' ``anomaly.strengths``)."""
    threshold_file: Path | None = None
    """Anomaly models: a ``threshold.json`` of this very model and fold, used instead of the stored threshold."""
    check_inputs: bool = True
    """Read every input image of this part for NaN / Inf voxels and cut-off files first (``--skip-input-check``:
    off)."""
    partition: tuple[int, ...] | None = None
    """Pieces per axis of the patch; their product must be torchrun's WORLD_SIZE (1 without torchrun). Each case's
    sliding-window tiles are then shared among the processes and rank 0 writes the files
    (``partitioned_prediction.py``). None: one process, nnU-Net's own sliding window."""
    partition_timeout: float = 600.0
    """Seconds a rank of a partitioned run waits for the others before it stops with an error."""

    def __post_init__(self) -> None:
        """The values that need no file to check; ValueError with the flag's name and the allowed values."""
        if self.strengths is not None:
            try:
                AnomalySettings(strengths=tuple(self.strengths))
            except ValueError as error:
                raise ValueError(f"--strengths: {error}; pass numbers in (0, 1], e.g. --strengths 0.25 0.5") from None
        if self.threshold_file is not None and not Path(self.threshold_file).is_file():
            raise ValueError(f"--threshold-file {self.threshold_file} does not exist; pass a fold's threshold.json")
        if self.sampler is not None and self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler '{self.sampler}'; choose one of {', '.join(SAMPLERS)}")
        for name, value in (("steps", self.steps), ("ensemble-size", self.seeds)):
            if value is not None and value < 1:
                raise ValueError(f"--{name} {value}: must be at least 1")
        if self.eta is not None and not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"--eta {self.eta}: must be in [0, 1] (0 = deterministic DDIM, 1 = DDPM-like)")
        if self.spacing is not None and self.spacing not in SPACINGS:
            raise ValueError(f"--spacing {self.spacing}: choose one of {', '.join(SPACINGS)}")
        if not 0.0 < self.step_size <= 1.0:
            raise ValueError(f"-step_size {self.step_size}: must be in (0, 1]")
        if self.num_parts < 1 or not 0 <= self.part_id < self.num_parts:
            raise ValueError(f"-part_id {self.part_id} / -num_parts {self.num_parts}: need num_parts >= 1 and "
                             "0 <= part_id < num_parts")
        check_device_name(self.device)
        if self.num_processes_preprocessing < 0 or self.num_processes_export < 0:
            raise ValueError("-npp and -nps must be >= 0")
        from nnugen.inference.partitioned_sampling import check_partition_flags

        check_partition_flags(self.partition, self.partition_timeout)

    def sampler_changes(self) -> dict:
        """The sampler settings this request overrides (``SamplerSettings``: name, steps, seeds, eta, spacing,
        shared_first_step)."""
        changes = {"name": self.sampler, "steps": self.steps, "seeds": self.seeds, "eta": self.eta,
                   "spacing": self.spacing, "shared_first_step": self.shared_first_step}
        return {k: v for k, v in changes.items() if v is not None}


@dataclass(frozen=True)
class CheckedRequest:
    """A request whose input was validated: the model folder, its dataset.json and this part's cases."""

    model_folder: Path
    dataset_json: dict
    folds: tuple[int | str, ...]
    cases: tuple[InputCase, ...]


def check_request(request: PredictRequest) -> CheckedRequest:
    """The checks of the model folder, the input folder and its images, and the output folder, before any model is
    loaded or anything written; ValueError saying what to change."""
    previous = request.previous_stage_predictions
    if previous is not None and not Path(previous).is_dir():
        raise ValueError(f"-prev_stage_predictions {previous} does not exist; predict the previous stage first")
    folder = resolve_model_folder(request)
    dataset_json, plans = folder.dataset_json(), folder.plans()
    if request.save_uncertainty and plans.get("image_reader_writer") != "SimpleITKIO":
        raise ValueError(f"--save-uncertainty writes SimpleITK images, but this model reads images with "
                         f"{plans.get('image_reader_writer')}; leave out --save-uncertainty")
    folds = _checked_folds(folder, request.folds, request.checkpoint)
    _check_folders(request, folder.path)
    cases = find_cases(request.input_folder, dataset_json["file_ending"], dataset_json["channel_names"])
    _check_output_names(cases, request, folder, dataset_json)
    part = tuple(cases[request.part_id::request.num_parts])
    if request.check_inputs:
        check_input_images([path for case in part for path in case.files])
    return CheckedRequest(folder.path, dataset_json, folds, part)


def _check_folders(request: PredictRequest, model_folder: Path) -> None:
    """The output folder must not be, or lie inside, a folder the run reads (the input, the model, the previous
    stage's predictions), nor hold the input folder: predictions would overwrite or mix with what is read.
    Compared resolved, so symbolic links count as the folders they point to."""
    read = [("-i", Path(request.input_folder)), ("the model folder", model_folder)]
    if request.previous_stage_predictions is not None:
        read.append(("-prev_stage_predictions", Path(request.previous_stage_predictions)))
    for flag, folder in read:
        kind = overlap(request.output_folder, folder)
        if kind in ("same", "inside"):
            raise ValueError(f"-o {request.output_folder} is {'' if kind == 'same' else 'inside '}{flag} "
                             f"{folder.resolve()}; predictions would overwrite or mix with what is read: choose an "
                             "output folder outside it")
        if flag == "-i" and kind == "holds":
            raise ValueError(f"-i {request.input_folder} lies inside -o {request.output_folder}; choose an output "
                             "folder that does not hold the input")


def _check_output_names(cases: list[InputCase], request: PredictRequest, folder: ModelFolder,
                        dataset_json: dict) -> None:
    """No two cases may write the same file: with uncertainty maps a case ``a`` writes ``a_entropy``, so a case named
    ``a_entropy`` would be overwritten (anomaly models likewise with ``_anomaly``, ``_counterfactual`` ...). Checked
    over all cases, whatever part this run is, since parts share the output folder."""
    try:
        trainer = folder.trainer
    except InputError:
        trainer = None  # a -m folder not named as nnU-Net names them: predicted as diffusion segmentation
    task = task_of_trainer(trainer) if trainer else None
    anomaly = task is not None and task.section == "anomaly"
    if not (anomaly or request.save_uncertainty):
        return  # one file per case (and .npz / .pkl): case names are unique already
    ending = dataset_json["file_ending"]
    if anomaly:
        from nnugen.inference.anomaly_export import anomaly_output_files

        # every file an anomaly model may write (the variance map with an ensemble), so any ensemble size is safe
        def names(case: str) -> list[str]:
            return [p.name for p in anomaly_output_files(Path(case), ending, request.save_probabilities,
                                                         len(dataset_json["channel_names"]), True)]
    else:
        from nnugen.inference.case_export import output_files

        def names(case: str) -> list[str]:
            return [p.name for p in output_files(Path(case), ending, request.save_probabilities, True)]

    writer: dict[str, str] = {}
    for case in cases:
        for name in names(case.identifier):
            other = writer.setdefault(name, case.identifier)
            if other != case.identifier:
                raise ValueError(f"cases {other} and {case.identifier} in {request.input_folder} would both write "
                                 f"{name} in -o{' (with --save-uncertainty)' if not anomaly else ''}; rename one of "
                                 "them or predict them into separate output folders")


def check_input_images(files: list[Path]) -> None:
    """The check ``nnugen_check`` runs on a raw dataset (NaN / Inf voxels, cut-off or corrupt files), on the images a
    run reads; one ValueError naming every bad file, so nothing is predicted from them."""
    problems = check_image_files(files)
    if problems:
        raise ValueError(f"{len({problem.path for problem in problems})} input image(s) cannot be used, nothing "
                         f"was written: {'; '.join(map(str, problems))} (fix or remove them, or pass "
                         "--skip-input-check to predict anyway)")


def resolve_model_folder(request: PredictRequest) -> ModelFolder:
    """``-m`` as given, or ``nnUNet_results/<dataset>/<trainer>__<plans>__<configuration>``; it must exist."""
    if request.model_folder is not None:
        if request.dataset is not None:
            raise ValueError("pass either -m MODEL_FOLDER or -d DATASET (with -tr / -p / -c), not both")
        folder = ModelFolder(Path(request.model_folder))
    else:
        if request.dataset is None or request.configuration is None:
            raise ValueError("pass -d DATASET and -c CONFIGURATION (or -m MODEL_FOLDER)")
        if not os.environ.get("nnUNet_results"):
            raise ValueError("nnUNet_results is not set; export it as for nnUNetv2_predict, or pass -m MODEL_FOLDER")
        # dataset_name refuses a name that would leave nnUNet_results ('..', separators)
        folder = ModelFolder.of(dataset_name(request.dataset), request.trainer, request.configuration, request.plans)
    return folder.require("train it first (nnugen_train) or check -d / -tr / -p / -c")


def _checked_folds(folder: ModelFolder, folds: tuple[int | str, ...] | None, checkpoint: str) -> tuple:
    if folds is None:
        found = folder.folds_with(checkpoint)
        if not found:
            raise ValueError(f"no fold_X/{checkpoint} in {folder.path}; train a fold first or pass -f / -chk")
        return found
    missing = [f for f in folds if not folder.checkpoint(f, checkpoint).is_file()]
    if missing:
        raise ValueError(f"{folder.path} has no {checkpoint} for fold(s) {', '.join(map(str, missing))}; train them "
                         "or pick other folds with -f")
    return tuple(folds)


def predict(request: PredictRequest) -> list[Path]:
    """Predict this part's cases; returns the files written. Nothing is written if a check fails."""
    checked = check_request(request)
    if request.partition is None:
        return _predict_with_model(checked, request, None)
    from nnugen.inference.partitioned_prediction import PredictionPartition
    from nnugen.inference.partitioned_sampling import joined_ranks

    with joined_ranks(request.device, request.partition_timeout) as place:
        return _predict_with_model(checked, request, PredictionPartition(tuple(request.partition), place))


def _predict_with_model(checked: CheckedRequest, request: PredictRequest, partition) -> list[Path]:
    """Load the model (on this rank's device for a ``--partition`` run) and predict; the files written (none on
    ranks other than 0)."""
    from nnugen.inference.model_loading import load_diffusion_predictor
    from nnugen.models.anomaly_segmenter import AnomalySegmenter

    predictor, segmenter = load_diffusion_predictor(checked.model_folder, checked.folds, request, partition)
    if partition is not None:
        from nnugen.inference.partitioned_sampling import check_grid

        check_grid(partition.grid, len(predictor.configuration_manager.patch_size))
        if isinstance(segmenter, AnomalySegmenter):
            raise ValueError(f"--partition {' '.join(map(str, partition.grid))}: anomaly models cannot be partitioned "
                             "yet; predict them in one process (leave out --partition)")
    # the request's sampler settings over the plans', for this run only (sampling.py)
    with segmenter.sampling(replace(segmenter.planned_sampler, **request.sampler_changes())):
        return _predict_cases(predictor, segmenter, checked, request, partition)


def _predict_cases(predictor, segmenter, checked: CheckedRequest, request: PredictRequest,
                   partition=None) -> list[Path]:
    from nnugen.inference.anomaly_prediction import prepare_anomaly_model
    from nnugen.inference.case_export import output_files
    from nnugen.inference.case_loop import run_cases
    from nnugen.models.anomaly_segmenter import AnomalySegmenter

    anomaly = isinstance(segmenter, AnomalySegmenter)
    writes = partition is None or partition.place.rank == 0
    model = segmenter  # what run_cases predicts with: the segmenter, or an anomaly model's AnomalyPredictor
    if anomaly:
        model = prepare_anomaly_model(predictor, segmenter, checked.model_folder, checked.folds, request)
        settings = model.settings_used()
    elif request.strengths is not None or request.threshold_file is not None:
        raise ValueError("--strengths and --threshold-file are for anomaly models (NnugenAnomalyTrainer); leave "
                         "them out for diffusion segmentation")
    else:
        settings = asdict(segmenter.sampling_request.sampler)
    output = Path(request.output_folder)

    def start_writing() -> None:
        output.mkdir(parents=True, exist_ok=True)
        _write_run_files(output, predictor, settings, request)

    ending = checked.dataset_json["file_ending"]

    def files_of(case) -> list[Path]:
        if anomaly:
            return model.output_files(output / case.identifier, ending, request.save_probabilities)
        return output_files(output / case.identifier, ending, request.save_probabilities, request.save_uncertainty)

    cases = checked.cases
    if request.continue_prediction:
        from nnugen.inference.image_writing import output_complete  # one test of "done", shared with sampling

        cases = tuple(case for case in cases if not all(output_complete(path) for path in files_of(case)))
    if partition is not None:
        from nnugen.inference.partitioned_sampling import broadcast_from_rank_zero

        cases = broadcast_from_rank_zero(cases, partition.place)  # every rank predicts the cases rank 0 writes
    part = f" (part {request.part_id} of parts 0-{request.num_parts - 1})" if request.num_parts > 1 else ""
    if writes:
        print(f"nnugen_predict: {len(cases)} case(s) to predict{part} with {settings}, seed {request.seed}")
    if partition is not None and writes:
        print(f"nnugen_predict: the sliding-window tiles of every case cut {' x '.join(map(str, partition.grid))} "
              f"over {partition.place.world_size} process(es); rank 0 writes the files")
    return run_cases(predictor, model, cases, output, request, start_writing, writes)


def _write_run_files(output: Path, predictor, settings: dict, request: PredictRequest) -> None:
    """What nnUNetv2_predict leaves next to its predictions (dataset.json and plans.json, which nnU-Net's
    postprocessing reads), plus the request, all atomically (parts may write them at the same time)."""
    from nnugen.atomic_files import atomic_write_json

    atomic_write_json(output / "dataset.json", predictor.dataset_json)
    atomic_write_json(output / "plans.json", predictor.plans_manager.plans)
    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(request).items()}
    arguments["sampler_used"] = settings
    name = "nnugen_predict_args" + (f"_part{request.part_id}of{request.num_parts}" if request.num_parts > 1 else "")
    atomic_write_json(output / f"{name}.json", arguments)
