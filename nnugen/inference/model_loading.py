"""Loading a trained model folder into nnU-Net's own ``nnUNetPredictor`` (``initialize_from_trained_model_folder``:
the trainer named in the checkpoint builds the network from the folder's plans), and checking that the network is a
diffusion segmenter before anything is written. nnU-Net's predictor wraps the whole network in ``torch.compile`` when
``nnUNet_compile`` is true, sampler loop included; that wrap is undone and nnugen's compile policy applied instead
(compile_policy.py: only the networks, and off unless ``nnUNet_compile`` or ``NNUGEN_COMPILE`` asks, as in nnU-Net's
predictor)."""

from __future__ import annotations

import pickle
import warnings
from functools import partial
from pathlib import Path

from nnugen.devices import torch_device, usable_cpu_cores
from nnugen.run.ext_trainer_path import ensure_ext_trainer_path


def load_diffusion_predictor(model_folder: Path, folds: tuple, request, partition=None):
    """(nnUNetPredictor, its DiffusionSegmenter or AnomalySegmenter) for a ``PredictRequest``; the request's sampler
    settings are said around the prediction (``segmenter.sampling``). ValueError for a model of another kind, a
    cascade stage without its previous predictions, more steps than trained, or a device that is not there.
    ``partition``: this rank of a ``--partition`` run (``partitioned_prediction.PredictionPartition``): the
    predictor is a ``PartitionedPredictor`` on the rank's device and its share of the CPU threads."""
    ensure_ext_trainer_path()  # the checkpoint names an nnugen trainer; nnU-Net's lookup must find it
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from torch._dynamo import OptimizedModule

    from nnugen.models.anomaly_segmenter import AnomalySegmenter
    from nnugen.models.compile_policy import apply_compile_policy
    from nnugen.models.diffusion_segmenter import DiffusionSegmenter

    device = torch_device(request.device) if partition is None else partition.place.device
    make = nnUNetPredictor
    if partition is not None:
        from nnugen.inference.partitioned_prediction import PartitionedPredictor

        make = partial(PartitionedPredictor, partition)
    predictor = make(tile_step_size=request.step_size, use_gaussian=True, use_mirroring=request.mirroring,
                     perform_everything_on_device=request.on_device, device=device, verbose=request.verbose,
                     verbose_preprocessing=request.verbose, allow_tqdm=request.progress_bar)
    try:
        with warnings.catch_warnings():
            # nnU-Net's trainer lookup imports every built-in trainer, Primus among them, whose timm import warns
            # about torch.jit.interface: noise on stderr that says nothing about this prediction
            warnings.filterwarnings("ignore", message=".*torch.jit.interface", category=FutureWarning)
            predictor.initialize_from_trained_model_folder(str(model_folder), list(folds),
                                                           checkpoint_name=request.checkpoint)
    except (RuntimeError, EOFError, KeyError, pickle.UnpicklingError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"the model in {model_folder} does not load ({first_line}); check the checkpoint "
                         f"({request.checkpoint}) or train again") from None
    network = predictor.network
    network = network._orig_mod if isinstance(network, OptimizedModule) else network
    if not isinstance(network, (DiffusionSegmenter, AnomalySegmenter)):
        raise ValueError(f"{model_folder} was trained with {predictor.trainer_name}, not a diffusion segmentation "
                         "trainer; use nnUNetv2_predict")
    predictor.network = network
    # the decision is printed with --verbose only, so prediction's output stays as nnU-Net's
    apply_compile_policy(network, device, print if request.verbose else lambda line: None, default=False)
    previous_stage = predictor.configuration_manager.previous_stage_name
    if previous_stage is not None and request.previous_stage_predictions is None:
        raise ValueError(f"this model is a cascade stage after {previous_stage}; pass that stage's predictions with "
                         "-prev_stage_predictions")
    trained = network.diffusion.timesteps if isinstance(network, DiffusionSegmenter) else None
    if trained is not None and request.steps is not None and request.steps > trained:
        raise ValueError(f"--steps {request.steps}: this model was trained with {trained} timesteps, so it samples "
                         f"with at most {trained} steps; for more, train with more timesteps (e.g. "
                         "NnugenDiffSegTrainer_T1000)")
    threads = usable_cpu_cores() if partition is None else partition.place.cpu_threads
    torch.set_num_threads(threads if device.type == "cpu" else 1)
    return predictor, network
