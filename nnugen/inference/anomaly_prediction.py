"""``nnugen_predict`` on a counterfactual anomaly model (``NnugenAnomalyTrainer``): the checks before anything is
written, and one case through nnU-Net's predictor.

One sliding-window pass per case gives everything: inside ``AnomalySegmenter.packed_output`` each tile returns the
lesion logits, the anomaly map, its variance across seeds and the mean counterfactual stacked on the channel axis,
and nnU-Net's predictor averages them over tiles (Gaussian weighting) and folds exactly as it averages logits. Its
result buffer has one channel per segmentation head, so for that pass the predictor is told the packed channel count.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from nnugen.anomaly import ThresholdRecord, threshold_model_id
from nnugen.inference.anomaly_export import export_anomaly_case
from nnugen.inference.ensemble_prediction import finite_logits
from nnugen.models.anomaly_segmenter import NO_THRESHOLD, AnomalySegmenter


def prepare_anomaly_model(predictor, segmenter: AnomalySegmenter, model_folder: Path, folds: tuple,
                          request) -> None:
    """Apply the request's strengths, and check (ValueError, before anything is written) that the model can write
    float images and has a threshold in every fold, or take it from ``request.threshold_file`` (one fold only)."""
    if request.save_uncertainty:
        raise ValueError("--save-uncertainty is for diffusion segmentation; an anomaly model always writes "
                         "CASE_anomaly and, with --seeds above 1, CASE_anomaly_variance")
    if predictor.plans_manager.plans.get("image_reader_writer") != "SimpleITKIO":
        raise ValueError(f"anomaly maps and counterfactuals are written with SimpleITK, but this model reads images "
                         f"with {predictor.plans_manager.plans.get('image_reader_writer')}; use nnUNetv2_predict for "
                         "the segmentation alone")
    segmenter.set_sampling(strengths=request.strengths)
    parameters = predictor.list_of_parameters  # one state dict per fold, loaded before each fold's pass
    if request.threshold_file is not None:
        if len(folds) != 1:
            raise ValueError(f"--threshold-file holds the threshold of one fold, but {len(folds)} folds were "
                             "selected; pass that fold alone with -f F")
        model = threshold_model_id(predictor.trainer_name, predictor.plans_manager.plans_name,
                                   Path(model_folder).name.rsplit("__", 1)[-1], folds[0])
        record = ThresholdRecord.load(request.threshold_file, model)
        parameters[0]["threshold"] = torch.tensor(record.threshold)
        parameters[0]["threshold_chosen"] = torch.tensor(True)
    missing = [fold for fold, state in zip(folds, parameters) if not bool(state["threshold_chosen"])]
    if missing:
        raise ValueError(f"fold(s) {', '.join(map(str, missing))}: {NO_THRESHOLD}")


def anomaly_settings_used(segmenter: AnomalySegmenter) -> dict:
    """The settings this run samples with, for ``nnugen_predict_args.json``."""
    return {"sampler": asdict(segmenter.generator.sampler), "anomaly": asdict(segmenter.anomaly)}


@contextmanager
def _packed_predictor(predictor, segmenter: AnomalySegmenter, seed: int):
    """The predictor's result buffer sized for the packed channels and the segmenter at ``seed``; both restored."""
    label_manager, previous_seed = predictor.label_manager, segmenter.seed
    # nnU-Net's sliding window reads only num_segmentation_heads from the label manager to size its buffer
    predictor.label_manager = SimpleNamespace(num_segmentation_heads=segmenter.packed_channels)
    segmenter.seed = seed
    try:
        with segmenter.packed_output():
            yield
    finally:
        predictor.label_manager, segmenter.seed = label_manager, previous_seed


@dataclass(frozen=True)
class AnomalyCasePrediction:
    logits: np.ndarray
    """(num_classes, *network grid): the lesion logits nnUNetv2_predict thresholds."""
    maps: np.ndarray
    """(1, ...) the anomaly map, or (2, ...) with its variance across seeds when there are several seeds."""
    counterfactual: np.ndarray
    """(C, ...) mean pseudo-healthy image over strengths and seeds, in nnU-Net's normalised intensities."""


def predict_anomaly_case(predictor, segmenter: AnomalySegmenter, data: torch.Tensor, case: str,
                         seed: int) -> AnomalyCasePrediction:
    """``data``: nnU-Net's preprocessed case (C, *network grid). Counterfactual member k uses ``seed + k``."""
    with _packed_predictor(predictor, segmenter, seed):
        packed = finite_logits(predictor.predict_logits_from_preprocessed_data(data), case)
    parts = segmenter.unpack(packed)
    maps = parts.map if segmenter.generator.sampler.seeds == 1 else torch.cat([parts.map, parts.variance])
    return AnomalyCasePrediction(parts.logits.numpy(), maps.numpy(), parts.counterfactual.numpy())


def anomaly_export_job(predictor, segmenter: AnomalySegmenter, case, item: dict, seed: int,
                       save_probabilities: bool) -> tuple:
    """(``export_anomaly_case``, its arguments) for one preprocessed case; picklable for ``-nps`` workers."""
    prediction = predict_anomaly_case(predictor, segmenter, item["data"], case.identifier, seed)
    images = segmenter.image_channel_indices()  # an anatomy-mask channel has no counterfactual
    return export_anomaly_case, (
        prediction.logits, prediction.maps, prediction.counterfactual, item["data"].numpy()[images],
        [str(case.files[k]) for k in images], item["data_properties"], predictor.plans_manager,
        predictor.configuration_manager, predictor.dataset_json, item["ofile"], save_probabilities)
