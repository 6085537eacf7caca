"""``nnugen_predict`` on a counterfactual anomaly model (``NnugenAnomalyTrainer``): the checks before anything is
written, and one case through nnU-Net's predictor.

One sliding-window pass per case gives everything: the segmenter's ``packed_view`` returns per tile the lesion logits,
the anomaly map, its variance across seeds and the mean counterfactual stacked on the channel axis, and nnU-Net's
predictor averages them over tiles (Gaussian weighting) and folds exactly as it averages logits. That pass runs in an
``nnUNetPredictor`` of its own, set up through nnU-Net's public ``manual_initialization``: the packed view as the
network, the folds' parameters the model folder's predictor loaded, and a dataset.json whose labels number the packed
channels (nnU-Net sizes its result buffer by the label count). The model folder's predictor is left as loaded; it
preprocesses and exports.

The threshold of the logits is each fold's stored one, loaded with the fold's parameters, or with
``--threshold-file`` (one fold only) the file's, given to the packed view, which prefers it to the loaded buffer.
Sampler settings come from the caller's ``segmenter.sampling`` block (predict_api.py); the strengths and each case's
seed are said here, per case.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from nnugen.anomaly import ThresholdRecord
from nnugen.folders.model_folder import model_id
from nnugen.inference.anomaly_export import anomaly_output_files, export_anomaly_case
from nnugen.inference.ensemble_prediction import finite_logits
from nnugen.models.anomaly_sampling import checked_strengths
from nnugen.models.anomaly_segmenter import NO_THRESHOLD, AnomalySegmenter
from nnugen.models.anomaly_views import PackedView, packed_dataset_json


@dataclass(frozen=True)
class AnomalyCasePrediction:
    logits: np.ndarray
    """(num_classes, *network grid): the lesion logits nnUNetv2_predict thresholds."""
    maps: np.ndarray
    """(1, ...) the anomaly map, or (2, ...) with its variance across seeds when there are several seeds."""
    counterfactual: np.ndarray
    """(C, ...) mean pseudo-healthy image over strengths and seeds, in nnU-Net's normalised intensities."""


@dataclass(frozen=True)
class AnomalyPredictor:
    """What ``nnugen_predict`` predicts an anomaly model's cases with (``prepare_anomaly_model``)."""

    segmenter: AnomalySegmenter
    view: PackedView
    """The packed view, with the threshold of ``--threshold-file`` if one was given."""
    packed: object
    """The ``nnUNetPredictor`` of the packed pass (``view`` as its network)."""
    strengths: tuple[float, ...]

    def settings_used(self) -> dict:
        """The settings this run samples with, for ``nnugen_predict_args.json``."""
        return {"sampler": asdict(self.segmenter.sampling_request.sampler),
                "anomaly": asdict(replace(self.segmenter.anomaly, strengths=self.strengths))}

    def output_files(self, output_truncated: Path, file_ending: str, save_probabilities: bool) -> list[Path]:
        """The files one case writes (``anomaly_output_files``)."""
        return anomaly_output_files(output_truncated, file_ending, save_probabilities, self.segmenter.image_channels,
                                    self.segmenter.sampling_request.sampler.seeds > 1)

    def predict_case(self, data: torch.Tensor, case: str, seed: int) -> AnomalyCasePrediction:
        """``data``: nnU-Net's preprocessed case (C, *network grid). Counterfactual member k uses ``seed + k``."""
        with self.segmenter.sampling(seed=seed, strengths=self.strengths) as request:
            packed = finite_logits(self.packed.predict_logits_from_preprocessed_data(data), case)
        parts = self.view.unpack(packed)
        maps = parts.map if request.sampler.seeds == 1 else torch.cat([parts.map, parts.variance])
        return AnomalyCasePrediction(parts.logits.numpy(), maps.numpy(), parts.counterfactual.numpy())

    def export_job(self, predictor, case, item: dict, seed: int, save_probabilities: bool) -> tuple:
        """(``export_anomaly_case``, its arguments) for one preprocessed case; picklable for ``-nps`` workers.
        ``predictor``: the model folder's, whose plans and dataset.json the export follows."""
        prediction = self.predict_case(item["data"], case.identifier, seed)
        images = self.segmenter.image_channel_indices()  # an anatomy-mask channel has no counterfactual
        return export_anomaly_case, (
            prediction.logits, prediction.maps, prediction.counterfactual, item["data"].numpy()[images],
            [str(case.files[k]) for k in images], item["data_properties"], predictor.plans_manager,
            predictor.configuration_manager, predictor.dataset_json, item["ofile"], save_probabilities)


def prepare_anomaly_model(predictor, segmenter: AnomalySegmenter, model_folder: Path, folds: tuple,
                          request) -> AnomalyPredictor:
    """Check (ValueError, before anything is written) that the model can write float images and has a threshold in
    every fold, or take it from ``request.threshold_file`` (one fold only); the packed pass for the request's
    strengths. ``predictor``: the model folder's ``nnUNetPredictor`` (``initialize_from_trained_model_folder``)."""
    if request.save_uncertainty:
        raise ValueError("--save-uncertainty is for diffusion segmentation; an anomaly model always writes "
                         "CASE_anomaly and, with --ensemble-size above 1, CASE_anomaly_variance")
    if predictor.plans_manager.plans.get("image_reader_writer") != "SimpleITKIO":
        raise ValueError(f"anomaly maps and counterfactuals are written with SimpleITK, but this model reads images "
                         f"with {predictor.plans_manager.plans.get('image_reader_writer')}; use nnUNetv2_predict for "
                         "the segmentation alone")
    strengths = segmenter.anomaly.strengths if request.strengths is None else checked_strengths(request.strengths)
    threshold = None
    if request.threshold_file is not None:
        if len(folds) != 1:
            raise ValueError(f"--threshold-file holds the threshold of one fold, but {len(folds)} folds were "
                             "selected; pass that fold alone with -f F")
        model = model_id(predictor.trainer_name, predictor.plans_manager.plans_name,
                         Path(model_folder).name.rsplit("__", 1)[-1], folds[0])
        threshold = ThresholdRecord.load(request.threshold_file, model).threshold
    else:  # each fold's own threshold, as its parameters hold it
        missing = [fold for fold, state in zip(folds, predictor.list_of_parameters)
                   if not bool(state["threshold_chosen"])]
        if missing:
            raise ValueError(f"fold(s) {', '.join(map(str, missing))}: {NO_THRESHOLD}")
    view = segmenter.packed_view(threshold)
    return AnomalyPredictor(segmenter, view, packed_predictor(predictor, view), strengths)


def packed_predictor(predictor, view: PackedView):
    """A copy of the model folder's ``nnUNetPredictor`` (its sliding window, mirroring, device and the folds'
    parameters), initialised again with nnU-Net's ``manual_initialization`` so that its network is the packed
    ``view`` and its result buffer has one channel per packed output; ``predictor`` itself is left as it is."""
    from nnugen.models.compile_policy import predictor_compile_off

    packed = copy.copy(predictor)  # the constructor's settings as they are (a new one would print its device note)
    with predictor_compile_off():  # the networks are compiled in place already, if at all (compile_policy.py)
        packed.manual_initialization(view, predictor.plans_manager, predictor.configuration_manager,
                                     predictor.list_of_parameters, packed_dataset_json(predictor.dataset_json,
                                                                                       view.channels),
                                     predictor.trainer_name, predictor.allowed_mirroring_axes)
    return packed
