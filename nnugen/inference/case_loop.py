"""The loop over cases: nnU-Net's preprocessing (in ``-npp`` background workers, or in this process with 0), the
sampled ensemble (for an anomaly model: the counterfactuals) per case, and the export (in ``-nps`` background
workers, or in this process with 0), as ``nnUNetPredictor.predict_from_files`` runs them, but with a seed per case
and nnugen's atomic export."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator
from pathlib import Path
from time import sleep

from nnugen.atomic_files import remove_stale_temporaries
from nnugen.inference.anomaly_prediction import AnomalyPredictor
from nnugen.inference.case_export import export_case
from nnugen.inference.ensemble_prediction import predict_case
from nnugen.inference.input_cases import InputCase
from nnugen.inference.moments_pass import moments_predictor
from nnugen.seeding import case_seed


def run_cases(predictor, segmenter, cases: tuple[InputCase, ...], output: Path, request,
              start_writing: Callable[[], None], writes: bool = True) -> list[Path]:
    """Predict and export ``cases`` into ``output`` for a ``PredictRequest``; returns the files written. Case c
    samples its ensemble from ``case_seed(request.seed, c)``, whatever else this run predicts. ``start_writing``
    creates ``output`` and its run files; it is called once, when the first case has been predicted (or at the end
    when there is none), so a case refused in its prediction leaves nothing behind. First removes the temporaries a
    killed run left in ``output`` (a part still writing there keeps its own). ``writes`` False: a rank of a
    ``--partition`` run other than 0, which predicts its share of every case and writes nothing."""
    if writes and output.is_dir():
        removed = remove_stale_temporaries(output)
        if removed:
            print(f"nnugen_predict: removed {len(removed)} temporary file(s) an interrupted run left: "
                  f"{', '.join(p.name for p in removed)}")
    started = []

    def start() -> None:
        if writes and not started:
            start_writing()
            started.append(True)

    items = _preprocessed(predictor, cases, output, request) if cases else iter(())
    # --save-uncertainty: ensemble and maps in one sliding window per case (moments_pass.py), set up once per run
    moments = (moments_predictor(predictor, segmenter)
               if request.save_uncertainty and not isinstance(segmenter, AnomalyPredictor) else None)
    written: list[str] = []
    if request.num_processes_export == 0 or not writes:
        for case, item in items:
            export, arguments = _prediction(predictor, segmenter, case, item, request, moments, writes)
            start()
            if writes:
                written += export(*arguments)
        start()
        return [Path(p) for p in written]

    from nnunetv2.utilities.file_path_utilities import check_workers_alive_and_busy

    with multiprocessing.get_context("spawn").Pool(request.num_processes_export) as pool:
        workers, pending = list(pool._pool), []
        for case, item in items:
            export, arguments = _prediction(predictor, segmenter, case, item, request, moments)
            start()
            # like nnU-Net: do not let predictions run far ahead of a slow export (memory)
            while check_workers_alive_and_busy(pool, workers, pending, allowed_num_queued=2):
                sleep(0.1)
            pending.append(pool.apply_async(export, arguments))
        start()
        for result in pending:
            written += result.get()
    return [Path(p) for p in written]


def _prediction(predictor, segmenter, case: InputCase, item: dict, request, moments=None,
                say: bool = True) -> tuple[Callable, tuple]:
    """(export function, its arguments) for one preprocessed case: ``export_case`` for diffusion segmentation,
    ``export_anomaly_case`` for an anomaly model. ``moments``: the run's one-window uncertainty pass, if any."""
    if say:
        print(f"nnugen_predict: predicting {case.identifier}")
    seed = case_seed(request.seed, case.identifier)
    if isinstance(segmenter, AnomalyPredictor):  # an anomaly model's packed pass (anomaly_prediction.py)
        return segmenter.export_job(predictor, case, item, seed, request.save_probabilities)
    prediction = predict_case(predictor, segmenter, item["data"], case.identifier, seed,
                              segmenter.sampling_request.sampler.seeds, request.save_uncertainty, moments)
    maps = prediction.maps.cpu().numpy() if prediction.maps is not None else None
    return export_case, (prediction.logits.cpu().numpy(), maps, item["data_properties"], predictor.plans_manager,
                         predictor.configuration_manager, predictor.dataset_json, item["ofile"],
                         request.save_probabilities)


def _preprocessed(predictor, cases: tuple[InputCase, ...], output: Path, request) -> Iterator[tuple[InputCase, dict]]:
    """(case, {"data", "data_properties", "ofile"}) in the order of ``cases``, from nnU-Net's preprocessing."""
    import numpy as np
    import torch
    from nnunetv2.inference.data_iterators import preprocessing_iterator_fromfiles
    from nnunetv2.utilities.label_handling.label_handling import convert_labelmap_to_one_hot

    files = [[str(f) for f in case.files] for case in cases]
    truncated = [str(output / case.identifier) for case in cases]
    previous = None
    if request.previous_stage_predictions is not None:
        ending = predictor.dataset_json["file_ending"]
        previous = [str(Path(request.previous_stage_predictions) / f"{case.identifier}{ending}") for case in cases]
    by_output = {t: case for t, case in zip(truncated, cases)}
    if request.num_processes_preprocessing > 0:
        iterator = preprocessing_iterator_fromfiles(
            files, previous, truncated, predictor.plans_manager, predictor.dataset_json,
            predictor.configuration_manager, request.num_processes_preprocessing, predictor.device.type == "cuda",
            request.verbose)
        for item in iterator:
            yield by_output[item["ofile"]], item
        return
    preprocessor = predictor.configuration_manager.preprocessor_class(verbose=request.verbose)
    label_manager = predictor.plans_manager.get_label_manager(predictor.dataset_json)
    for index, case in enumerate(cases):
        data, segmentation, properties = preprocessor.run_case(
            files[index], previous[index] if previous is not None else None, predictor.plans_manager,
            predictor.configuration_manager, predictor.dataset_json)
        if previous is not None:
            one_hot = convert_labelmap_to_one_hot(segmentation[0], label_manager.foreground_labels, data.dtype)
            data = np.vstack((data, one_hot))
        yield case, {"data": torch.from_numpy(data).float().contiguous(), "data_properties": properties,
                     "ofile": truncated[index]}
