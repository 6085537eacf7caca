"""nnugen_predict's packed pass of an anomaly model, below the CLI: it runs in a predictor of its own (nnU-Net's
``manual_initialization`` with the packed view), so the model folder's predictor keeps its label manager, network and
loaded parameters; ``--threshold-file`` replaces the stored threshold through the view, not the parameters."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nnugen.anomaly import ThresholdRecord
from nnugen.config import (
    AnomalySettings,
    ChannelIntensity,
    DiffusionSettings,
    GenerationSettings,
    IntensitySettings,
    SamplerSettings,
)
from nnugen.folders.model_folder import model_id
from nnugen.inference.anomaly_prediction import prepare_anomaly_model
from nnugen.models.anomaly_segmenter import AnomalySegmenter
from nnugen.models.image_generator import ImageGenerator
from nnugen.networks import TimeConditionedUNet

TRAINER, FOLDER = "NnugenAnomalyTrainer", Path("results/NnugenAnomalyTrainer__nnugenPlans__2d")
DATASET_JSON = {"labels": {"background": 0, "lesion": 1}, "channel_names": {"0": "T2"}, "file_ending": ".nii.gz"}


def _segmenter() -> AnomalySegmenter:
    torch.manual_seed(0)
    denoiser = TimeConditionedUNet(1, 1, features_per_stage=(4, 8), kernel_sizes=((3, 3),) * 2,
                                   strides=((1, 1), (2, 2)), n_conv_per_stage=(1, 1), n_conv_per_stage_decoder=(1,))
    generator = ImageGenerator(denoiser, 1, 2, (16, 16), DiffusionSettings(timesteps=20), SamplerSettings(steps=2),
                               GenerationSettings(mode="image"), 0.99)
    model = AnomalySegmenter(generator, AnomalySettings(strengths=(0.5,), median_filter=0, mask_to_body=False),
                             IntensitySettings(channels=(ChannelIntensity(low=-2.0, high=3.0),)), 2)
    model.set_threshold(0.05)
    return model.eval()


def _predictor(segmenter: AnomalySegmenter, chosen: bool = True):
    """The model folder's predictor as ``load_diffusion_predictor`` leaves it: one fold's parameters loaded."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = PlansManager({"dataset_name": "Dataset001_X", "plans_name": "nnugenPlans",
                          "image_reader_writer": "SimpleITKIO", "configurations": {"2d": {
                              "patch_size": [16, 16], "spacing": [1.0, 1.0], "architecture": {}}}})
    predictor = nnUNetPredictor(use_mirroring=False, perform_everything_on_device=False, device=torch.device("cpu"),
                                allow_tqdm=False)
    parameters = {k: v.clone() for k, v in segmenter.state_dict().items()}
    parameters["threshold_chosen"] = torch.tensor(chosen)
    predictor.manual_initialization(segmenter, plans, plans.get_configuration("2d"), [parameters], DATASET_JSON,
                                    TRAINER, None)
    return predictor


def _request(**changes) -> SimpleNamespace:
    return SimpleNamespace(**{"save_uncertainty": False, "strengths": None, "threshold_file": None, **changes})


def test_the_packed_pass_leaves_the_predictor_alone_and_the_threshold_file_wins(tmp_path):
    segmenter = _segmenter()
    predictor = _predictor(segmenter)
    label_manager, parameters = predictor.label_manager, predictor.list_of_parameters
    record = tmp_path / "threshold.json"
    ThresholdRecord(0.2, "best_dice", 0.5, model_id(TRAINER, "nnugenPlans", "2d", 0)).save(record)
    data = torch.randn(1, 1, 24, 20, generator=torch.Generator().manual_seed(1))
    runs = {name: prepare_anomaly_model(predictor, segmenter, FOLDER, (0,), _request(threshold_file=file,
                                                                                         strengths=(0.3, 0.6)))
            for name, file in (("stored", None), ("file", record))}
    with segmenter.sampling(replace(segmenter.planned_sampler, seeds=2)):  # as predict_api's block
        stored, from_file = (runs[name].predict_case(data, "case", seed=3) for name in ("stored", "file"))
        assert runs["file"].settings_used()["anomaly"]["strengths"] == (0.3, 0.6)
    assert predictor.label_manager is label_manager and label_manager.num_segmentation_heads == 2
    assert predictor.network is segmenter and predictor.list_of_parameters is parameters
    assert float(parameters[0]["threshold"]) == pytest.approx(0.05) and len(parameters[0]) == len(
        segmenter.state_dict())
    assert runs["file"].packed.label_manager.num_segmentation_heads == runs["file"].view.channels == 5
    assert stored.maps.shape == from_file.maps.shape == (2, 1, 24, 20)  # the map and its variance over 2 seeds
    assert (stored.maps == from_file.maps).all() and stored.counterfactual.shape == (1, 1, 24, 20)
    anomaly = from_file.maps[0]
    for prediction, threshold in ((stored, 0.05), (from_file, 0.2)):
        clear = abs(anomaly - threshold) > 1e-2  # nnU-Net accumulates tiles in float16
        assert ((prediction.logits[1] > 0) == (anomaly > threshold))[clear].all()
    assert (from_file.logits[1] > 0).sum() < (stored.logits[1] > 0).sum()


def test_a_missing_threshold_or_a_threshold_file_for_several_folds_is_refused(tmp_path):
    segmenter = _segmenter()
    with pytest.raises(ValueError, match="fold\\(s\\) 0: this anomaly model has no threshold yet"):
        prepare_anomaly_model(_predictor(segmenter, chosen=False), segmenter, FOLDER, (0,), _request())
    with pytest.raises(ValueError, match="holds the threshold of one fold, but 2 folds"):
        prepare_anomaly_model(_predictor(segmenter), segmenter, FOLDER, (0, 1), _request(threshold_file="t.json"))
    with pytest.raises(ValueError, match="deterministic DDIM"):
        segmenter.sampling(SamplerSettings(name="ddpm", steps=2)).__enter__()
