"""``NnugenAnomalyTrainer``: counterfactual anomaly segmentation inside nnU-Net's training run.

- Training sees healthy cases only: nnU-Net's split (folds, ``splits_final.json``) is kept, and the fold's training
  cases are narrowed to the healthy ones: those listed in ``anomaly.healthy_cases_file`` (relative paths are taken
  from the raw dataset folder) or else in ``$nnUNet_raw/DatasetX/healthy_cases.txt``, or else those whose label has
  no foreground. The network is an ``AnomalySegmenter`` (a diffusion model of healthy images, EMA kept inside).
- The trainer trains through the segmenter's ``TrainingLoss`` view (forward = the loss of a preprocessed batch;
  its state dict is the segmenter's, so checkpoints keep their keys); under DDP that view is the module DDP wraps,
  so the loss passes through the wrapped module's forward as DDP needs. ``segmenter()`` is the model itself.
- With ``anomaly.space: latent`` the diffusion model learns the latents of the trained autoencoder of the same
  configuration and fold (found and loaded weights-only as the latent diffusion trainer does); the frozen autoencoder
  is part of the network, so its weights travel in the checkpoint. Latents are scaled by 1 / std, estimated at the
  start of training (by rank 0, for every rank, under DDP) and kept in the checkpoint.
- ``anomaly.condition_channel`` names an input channel holding an anatomy mask, never modelled (AnomalySegmenter); its
  index in dataset.json is checked before nnU-Net creates the output folder. In image space the denoiser is exported
  weights-only at the end, the frozen base of ``NnugenAnomalyTrainer_anatomyAdapter`` (mode ``label_adapter``).
- The final validation chooses the threshold (anomaly_threshold_hooks.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from nnunetv2.paths import nnUNet_results
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnugen.anomaly import healthy_cases_file
from nnugen.folders.checkpoint_files import unwrapped_network
from nnugen.models.anomaly_segmenter import AnomalySegmenter
from nnugen.models.anomaly_views import TrainingLoss
from nnugen.models.autoencoder_files import load_autoencoder
from nnugen.models.denoiser_files import BaseModel, denoiser_description, export_denoiser, read_base_denoiser
from nnugen.tasks import TASKS
from nnugen.trainers.anomaly_threshold_hooks import AnomalyThresholdHooks
from nnugen.trainers.ddp import from_rank_zero
from nnugen.trainers.healthy_split import has_foreground, healthy_training_cases
from nnugen.trainers.nnugen_ldm_trainer import NnugenLDMTrainer, estimated_scale_factor

ANOMALY_BASE = BaseModel("anomaly model", TASKS["anomaly"].trainer, "nnugen_train ID FOLD CONFIG --task anomaly",
                         "anomaly.generation.base_model", "train the adapter as NnugenAnomalyTrainer_anatomyAdapter "
                         "(nnugen_train ... --task anomaly_adapter)")


class NnugenAnomalyTrainer(AnomalyThresholdHooks):
    nnugen_task = "anomaly"
    has_previews = True

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        # the anatomy channel and an adapter's base model are checked before nnU-Net's constructor creates the output
        # folder, so bad settings or a missing base write nothing
        self.condition_index, self.base = self._read_condition(plans, configuration, fold, dataset_json)
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.is_cascaded:
            raise ValueError("anomaly segmentation does not use nnU-Net's cascade; train 2d, 3d_fullres or 3d_lowres")
        self.oversample_foreground_percent = 0.0  # healthy cases have no foreground to oversample

    @classmethod
    def _read_condition(cls, plans: dict, configuration: str, fold,
                        dataset_json: dict) -> tuple[int | None, tuple[Path, dict] | None]:
        """(input channel of the anatomy mask or None, (folder, weights) of the frozen base denoiser for the anatomy
        adapter or None); one-line ValueErrors."""
        manager = PlansManager(plans)
        configuration_manager = manager.get_configuration(configuration)
        settings = cls.task_settings(configuration_manager.configuration, configuration)
        index = settings.anomaly.condition_index(dataset_json["channel_names"],
                                                 tuple(configuration_manager.normalization_schemes))
        if settings.generation is None or settings.generation.mode != "label_adapter":
            return index, None
        if settings.anomaly.space != "image":
            raise ValueError(f"{cls.__name__} works in image space only; set anomaly.anomaly.space=image")
        if index is None:
            raise ValueError(f"{cls.__name__} conditions on an anatomy mask: name its channel with nnugen_plan --set "
                             "anomaly.anomaly.condition_channel=NAME (a channel of dataset.json) first")
        expected = denoiser_description(settings, len(dataset_json["channel_names"]) - 1, "image")
        return index, read_base_denoiser(ANOMALY_BASE, settings.generation.base_model, expected,
                                         Path(nnUNet_results.get()), manager.dataset_name, manager.plans_name,
                                         configuration, fold, cls.__name__)

    def initialize(self):
        super().initialize()
        segmenter = self.segmenter()
        if self.condition_index is not None:
            segmenter.set_condition_index(self.condition_index)
        if self.base is not None:
            segmenter.generator.denoiser.load_state_dict(self.base[1])
            self.print_to_log_file(f"anatomy adapter on the frozen anomaly denoiser in {self.base[0]} (weights only)")
        if segmenter.autoencoder is not None:
            folder = NnugenLDMTrainer.autoencoder_folder(self)  # found as the latent diffusion model finds it
            trained, _ = load_autoencoder(folder, self.device)  # weights only
            try:
                segmenter.autoencoder.load_state_dict(trained.state_dict())
            except RuntimeError:
                raise ValueError(f"the autoencoder in {folder} does not match the plans' autoencoder settings; retrain "
                                 "it (nnugen_train ... --task autoencoder) after changing them") from None
            self.print_to_log_file(f"latent anomaly model on the frozen autoencoder in {folder}")

    def training_network(self, network: AnomalySegmenter) -> TrainingLoss:
        # the segmenter's forward is the logits; training goes through its TrainingLoss view, whose forward is the
        # loss, so under DDP the loss passes through the wrapped module's forward and its gradients are reduced
        return network.training_loss()

    def segmenter(self) -> AnomalySegmenter:
        network = unwrapped_network(self)
        return network.segmenter if isinstance(network, TrainingLoss) else network

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, patch, mirror_axes = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self.settings.sampler.mirroring:
            self.inference_allowed_mirroring_axes = None  # each mirror would repeat every counterfactual
        return rotation, dummy_2d, patch, mirror_axes

    def on_train_start(self):
        super().on_train_start()
        segmenter = self.segmenter()
        if segmenter.autoencoder is not None and not segmenter.latent_scale > 0:  # not restored from a checkpoint
            segmenter.set_latent_scale(from_rank_zero(self.estimate_latent_scale))  # one value for every rank
            self.print_to_log_file(f"latent scale factor {float(segmenter.latent_scale):.4f}")

    def estimate_latent_scale(self) -> float:
        segmenter = self.segmenter()
        return estimated_scale_factor(lambda data: segmenter.autoencoder.encode(segmenter.split(data)[0]).mode(),
                                      self.dataloader_train, self.device)

    def compute_loss(self, data: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.network(data)  # the TrainingLoss view (DDP-wrapped under DDP); labels ignored: healthy cases only

    def after_optimizer_step(self) -> None:
        self.segmenter().generator.update_ema()

    def preview_panels(self, epoch: int):
        """Input | pseudo-healthy counterfactual (first image channel, one seed, the planned strengths and steps) |
        anomaly map (before any threshold) of the preview case (training_previews.py)."""
        from dataclasses import replace

        segmenter = self.segmenter()
        data = self.preview_batch["data"].to(self.device)
        with segmenter.sampling(replace(self.settings.sampler, seeds=1), epoch):
            result = segmenter.run(data)
        image = segmenter.split(data)[0][0, 0].float().cpu().numpy()
        shown = (float(image.min()), float(image.max()))  # the counterfactual on the input's grey scale
        panels = np.stack([image, result.counterfactuals[0, 0, 0].float().cpu().numpy(),
                           result.map[0, 0].float().cpu().numpy()])
        return panels, [shown, shown, None]

    def on_train_end(self):
        super().on_train_end()
        generator = self.segmenter().generator
        if self.local_rank == 0 and self.settings.anomaly.space == "image" and generator.adapter is None:
            # the base of the anatomy adapter, read weights-only as a label adapter reads its base DDPM
            export_denoiser(generator, denoiser_description(self.settings, generator.image_channels, "image"),
                            Path(self.output_folder))
            self.print_to_log_file(f"denoiser exported (weights only) to {self.output_folder}")

    # --- healthy-only training -----------------------------------------------------------------------------------

    def healthy_cases_file(self) -> Path | None:
        from nnunetv2.paths import nnUNet_raw

        raw_folder = Path(nnUNet_raw) / self.plans_manager.dataset_name if nnUNet_raw else None
        return healthy_cases_file(self.settings.anomaly.healthy_cases_file, raw_folder)

    def do_split(self):
        train_keys, val_keys = super().do_split()
        dataset = self.dataset_class(self.preprocessed_dataset_folder, train_keys,
                                     folder_with_segs_from_previous_stage=self.folder_with_segs_from_previous_stage)
        healthy, source = healthy_training_cases(train_keys, self.healthy_cases_file(),
                                                 lambda key: has_foreground(dataset, key), self.fold)
        self.print_to_log_file(f"anomaly training on healthy cases only: {len(healthy)} of the fold's "
                               f"{len(train_keys)} training cases ({source}); {len(val_keys)} validation cases")
        return healthy, val_keys
