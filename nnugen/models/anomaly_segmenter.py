"""``AnomalySegmenter``: counterfactual anomaly segmentation (pDDPM / cDDPM, Behrendt et al. 2023; AnoDDPM, Wyatt et
al. 2022; THOR, Bercea et al. 2024) as nnU-Net's trainer and predictor see it.

A diffusion model of healthy images (an ``ImageGenerator`` in image mode, held by composition: its EMA weights and
eps-MSE training loss are reused as they are) turns a partially noised scan back into a pseudo-healthy one; the
residual to the input is the anomaly map (nnugen.anomaly). The model also carries the threshold chosen on the fold's
validation cases (buffer ``threshold``, with ``threshold_chosen`` telling whether it has been chosen: a NaN sentinel
would be refused by the checkpoint writer, which never saves non-finite tensors) and, with ``anomaly.erode_search``,
the erosion of the map's region chosen with it (buffer ``erosion``, -1 until chosen).

The segmenter composes small pieces, each of one concern:

- ``AnomalyInput`` (anomaly_input.py): image channels to [-1, 1] with the plans' intensity map, the anatomy mask apart;
- ``LatentCodec`` (latent_codec.py): in latent mode, encode / decode with padding and the latent scale;
- ``counterfactual_ensemble`` (counterfactual_ensemble.py): the counterfactuals of every strength and seed, and their
  residual maps;
- ``MapPostprocessing`` and ``map_to_logits`` (nnugen.anomaly.map_postprocessing): mean over strengths, median filter,
  body and anatomy masks, small components, and the logits of a map.

What nnU-Net calls, one kind of output each:

- ``forward(image)``: preprocessed input (B, C_in, *spatial) -> the lesion logits (B, num_classes, *spatial) at the
  stored threshold, what ``nnUNetv2_predict`` wants (small components removed per tile);
- ``map_view()`` / ``packed_view(threshold)`` / ``training_loss()`` (anomaly_views.py): the raw map (to choose the
  threshold), every output of ``nnugen_predict`` stacked, and the training loss (what DDP wraps).

Sampling is an argument (anomaly_sampling.py): ``with segmenter.sampling(sampler, seed=S, strengths=(...)):`` sets
the DDIM steps, seeds per strength, base seed (member k uses ``S + k``) and noise strengths for the block; outside any
block the plans' settings with seed 0. The counterfactuals are always denoised with deterministic DDIM (eta 0), so
another sampler name or eta is refused (``DDIM_ONLY``).

Anatomy mask (``anomaly.condition_channel``): one input channel holds an anatomy mask; its index in the input, from
dataset.json, is the buffer ``condition_index`` that the trainer sets and the checkpoint keeps. The generator models
the other channels only; with ``mask_to_anatomy`` the map is 0 outside the mask. With a generator in mode
``label_adapter`` (``NnugenAnomalyTrainer_anatomyAdapter``), every counterfactual is denoised with the adapter's
residuals from the mask's one-hot (Mou et al. 2023).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor, nn

from nnugen.anomaly import LOGIT_SCALE, MapPostprocessing, check_threshold, map_to_logits
from nnugen.config import AnomalySettings, IntensitySettings
from nnugen.models.anomaly_input import AnomalyInput
from nnugen.models.anomaly_outputs import AnomalyResult
from nnugen.models.anomaly_sampling import AnomalySampledModel
from nnugen.models.anomaly_views import ErosionSearchView, MapView, PackedView, TrainingLoss
from nnugen.models.counterfactual_ensemble import counterfactual_ensemble
from nnugen.models.image_generator import ImageGenerator
from nnugen.models.intensity_map import IntensityMap
from nnugen.models.latent_codec import LatentCodec
from nnugen.models.precision import planned_autocast
from nnugen.networks.autoencoder import Autoencoder

NO_CONDITION_INDEX = ("this anomaly model does not know which input channel holds the anatomy mask "
                      "(condition_index unset); train it with nnugen_train, which records it from dataset.json")
NO_THRESHOLD = ("this anomaly model has no threshold yet: run the final validation (nnugen_train ID FOLD CONFIG "
                "--task anomaly --val) to choose it on the fold's validation cases; it is stored in "
                "checkpoint_final.pth")


class AnomalySegmenter(AnomalySampledModel, nn.Module):
    def __init__(self, generator: ImageGenerator, anomaly: AnomalySettings, intensity: IntensitySettings,
                 num_classes: int = 2, logit_scale: float = LOGIT_SCALE, autoencoder: Autoencoder | None = None,
                 amp: str = "fp32"):
        super().__init__()
        self.amp = amp  # the planned precision of the counterfactuals, whatever autocast the caller opened
        mode = generator.generation.mode
        if mode not in ("image", "label_adapter"):
            raise ValueError(f"the anomaly model needs an image-only generator or an anatomy adapter, got mode "
                             f"{mode!r}")
        if mode == "label_adapter" and not anomaly.condition_channel:
            raise ValueError("the anatomy adapter is conditioned on an anatomy mask: set anomaly.condition_channel to "
                             "the name of the mask's channel in dataset.json (nnugen_plan --set "
                             "anomaly.anomaly.condition_channel=NAME)")
        if num_classes < 2:
            raise ValueError(f"anomaly segmentation needs a background and a lesion label, got {num_classes} classes")
        if (autoencoder is None) != (anomaly.space == "image"):
            raise ValueError(f"anomaly.space {anomaly.space!r} needs {'an' if autoencoder is None else 'no'} "
                             "autoencoder")
        self.generator = generator
        # latent mode: the trained autoencoder, frozen (its weights travel in the checkpoint, for the predictor)
        self.autoencoder = autoencoder.requires_grad_(False) if autoencoder is not None else None
        if autoencoder is not None:  # image-mode checkpoints keep their keys
            self.register_buffer("latent_scale", torch.zeros(()))
        if anomaly.condition_channel:  # which input channel is the mask: set by the trainer, kept in the checkpoint
            self.register_buffer("condition_index", torch.tensor(-1))
        self.anomaly = anomaly
        # the plans' map of every input channel (the predictor rebuilds it from the model folder's plans.json)
        self.input_intensity = intensity
        self.num_classes = num_classes
        self.logit_scale = logit_scale
        self.register_buffer("threshold", torch.zeros(()))
        self.register_buffer("threshold_chosen", torch.zeros((), dtype=torch.bool))
        self.register_buffer("erosion", torch.tensor(-1))  # chosen with the threshold (erode_search); -1: the plans'
        self.register_load_state_dict_pre_hook(_erosion_not_chosen)
        self.init_sampling(generator.sampler)

    # --- state the trainer sets and the checkpoint keeps -------------------------------------------------------------

    def set_threshold(self, threshold: float) -> None:
        """Store the threshold chosen on validation data (anomalous where map > threshold)."""
        self.threshold.fill_(check_threshold(threshold))
        self.threshold_chosen.fill_(True)

    def stored_threshold(self) -> float:
        """The stored threshold; ValueError when none has been chosen."""
        if not bool(self.threshold_chosen):
            raise ValueError(NO_THRESHOLD)
        return float(self.threshold)

    def set_condition_index(self, index: int) -> None:
        """Record which input channel holds the anatomy mask (its index in dataset.json's ``channel_names``)."""
        if not self.anomaly.condition_channel:
            raise ValueError("this anomaly model has no anatomy condition channel (anomaly.condition_channel is empty)")
        if not 0 <= index < len(self.input_intensity.channels):
            raise ValueError(f"condition channel {index} is not one of the {len(self.input_intensity.channels)} input "
                             "channels of the plans' intensity map")
        self.condition_index.fill_(int(index))

    def set_latent_scale(self, scale: float) -> None:
        """The latents' scale factor (1 / std of training latents, Rombach et al. 2022 sec. 4.3.2)."""
        if not scale > 0:
            raise ValueError(f"latent scale factor {scale} must be > 0")
        self.latent_scale.fill_(float(scale))

    # --- the pieces --------------------------------------------------------------------------------------------------

    def anatomy_channel(self) -> int | None:
        """The input channel that holds the anatomy mask, or None without ``anomaly.condition_channel``."""
        if not self.anomaly.condition_channel:
            return None
        if int(self.condition_index) < 0:
            raise ValueError(NO_CONDITION_INDEX)
        return int(self.condition_index)

    def input_channels(self) -> AnomalyInput:
        """How this model reads its preprocessed input (image channels and anatomy mask)."""
        return AnomalyInput(self.input_intensity, self.anatomy_channel())

    def image_channel_indices(self) -> list[int]:
        """The input channels the model treats as images (all but the anatomy mask)."""
        return self.input_channels().image_indices

    @property
    def intensity(self) -> IntensityMap:
        """The plans' intensity map of the image channels (the anatomy mask left out)."""
        return self.input_channels().image_map

    @property
    def image_channels(self) -> int:
        return self.generator.image_channels if self.autoencoder is None else self.autoencoder.in_channels

    def split(self, image: Tensor) -> tuple[Tensor, Tensor | None]:
        """``AnomalyInput.split``: (image channels in [-1, 1] (float32), anatomy mask (B, 1, *spatial) bool or None)."""
        return self.input_channels().split(image)

    def codec(self) -> LatentCodec | None:
        """The latent codec in latent mode (ValueError before the latent scale is set), else None."""
        if self.autoencoder is None:
            return None
        return LatentCodec(self.autoencoder, self.latent_scale, self.generator.patch_size)

    def set_erosion(self, voxels: int) -> None:
        """Store the erosion of the map's region chosen on validation data (``anomaly.erode_search``); -1 = none
        chosen, the plans' ``anomaly.erode_region`` applies."""
        self.erosion.fill_(int(voxels))

    @property
    def erode_region(self) -> int:
        """The erosion of the map's region in use: the one chosen on validation data, else ``anomaly.erode_region``."""
        chosen = int(self.erosion)
        return chosen if chosen >= 0 else self.anomaly.erode_region

    @property
    def postprocessing(self) -> MapPostprocessing:
        a = self.anomaly
        return MapPostprocessing(a.median_filter, a.mask_to_body, a.mask_to_anatomy, a.min_component_voxels,
                                 self.erode_region)

    def body(self, image: Tensor) -> Tensor | None:
        """Where the map of a preprocessed input (B, C_in, *spatial) may be non-zero: body and anatomy masks as
        switched on (B, 1, *spatial) bool, or None."""
        return self.postprocessing.region(*self.split(image), self.input_channels().unpadded_boxes(image))

    def compiled_parts(self) -> list[nn.Module]:
        """What ``torch.compile`` may compile (compile_policy.py): the generator's networks and, in latent mode, the
        autoencoder's encoder and decoder; counterfactual loops, maps and post-processing stay eager."""
        autoencoder = self.autoencoder.compiled_parts() if self.autoencoder is not None else []
        return self.generator.compiled_parts() + autoencoder

    def train(self, mode: bool = True) -> AnomalySegmenter:
        super().train(mode)
        if self.autoencoder is not None:
            self.autoencoder.eval()  # frozen: it encodes the same way in training and at inference
        return self

    # --- what the pieces compute together ----------------------------------------------------------------------------

    def _counterfactuals(self, image: Tensor):
        """(model channels, anatomy mask or None, the counterfactual ensemble of every strength and seed) of a
        preprocessed input, sampled as the ``sampling`` block in force says; call inside the planned autocast."""
        x, anatomy = self.split(image)
        ensemble = counterfactual_ensemble(self.generator, x, anatomy, self.codec(), self.anomaly, self.strengths,
                                           self.sampling_request)
        return x, anatomy, ensemble

    @torch.no_grad()
    def run(self, image: Tensor, threshold: float | None = None) -> AnomalyResult:
        """Counterfactuals, residual maps and the post-processed map of ``image`` (B, C_in, *spatial, preprocessed),
        sampled as the ``sampling`` block in force says.

        The map: at each strength the residual of the seeds' mean counterfactual (``anomaly.seed_average``), their
        mean over strengths, a median filter and the body / anatomy masks; with ``threshold``, connected components
        above it smaller than ``min_component_voxels`` are cleared as well. Runs in the planned precision ``amp``
        (precision.py): nnU-Net's predictor opens an fp16 autocast on a GPU whatever the plan.
        """
        with planned_autocast(image.device, self.amp):
            x, anatomy, ensemble = self._counterfactuals(image)
            post = self.postprocessing
            boxes = self.input_channels().unpadded_boxes(image)
            result = post.smoothed(ensemble.strength_maps(self.anomaly.seed_average), x, anatomy, boxes)
            if threshold is not None:
                result = post.without_small_components(result, threshold)
            intensity = self.intensity
            healthy = torch.stack([intensity.to_preprocessed(member) for member in ensemble.members])
            return AnomalyResult(result, ensemble.residuals(), healthy)

    @torch.no_grad()
    def maps_by_erosion(self, image: Tensor, widest: int) -> Tensor:
        """(B, widest + 1, *spatial): channel k is the post-processed map of ``image`` with its region eroded by k
        voxels, every channel from the same counterfactuals, so the erosion can be chosen on validation cases
        (``anomaly.erode_search``) at the cost of one map."""
        with planned_autocast(image.device, self.amp):
            x, anatomy, ensemble = self._counterfactuals(image)
            strength_maps = ensemble.strength_maps(self.anomaly.seed_average)
            post, boxes = self.postprocessing, self.input_channels().unpadded_boxes(image)
            return torch.cat([replace(post, erode_region=k).smoothed(strength_maps, x, anatomy, boxes)
                              for k in range(widest + 1)], dim=1)

    def anomaly_map(self, image: Tensor, threshold: float | None = None) -> Tensor:
        """The post-processed anomaly map (B, 1, *spatial) of a preprocessed image (B, C_in, *spatial)."""
        return self.run(image, threshold).map

    def forward(self, image: Tensor) -> Tensor:
        """Preprocessed input (B, C_in, *spatial) -> lesion logits (B, num_classes, *spatial) at the stored threshold
        (``map_to_logits``: the argmax is ``map > threshold``); ValueError without a chosen threshold."""
        threshold = self.stored_threshold()
        return map_to_logits(self.anomaly_map(image, threshold), threshold, self.logit_scale, self.num_classes)

    # --- views (anomaly_views.py) ------------------------------------------------------------------------------------

    def map_view(self) -> MapView:
        """A module whose forward is the raw map (channel 1 of the logits' layout), for choosing the threshold."""
        return MapView(self)

    def erosion_search_view(self, widest: int) -> ErosionSearchView:
        """A module whose forward is the map at every erosion 0..``widest`` (``maps_by_erosion``)."""
        return ErosionSearchView(self, widest)

    def packed_view(self, threshold: float | None = None) -> PackedView:
        """A module whose forward is every output of ``nnugen_predict`` stacked; a ``threshold`` replaces the stored
        one."""
        return PackedView(self, threshold)

    def training_loss(self) -> TrainingLoss:
        """A module whose forward is the training loss of a preprocessed batch (what the trainer and DDP call)."""
        return TrainingLoss(self)


def _erosion_not_chosen(module, state_dict, prefix, *args) -> None:
    """Checkpoints written before the erosion was chosen with the threshold have no ``erosion``: none was chosen."""
    state_dict.setdefault(f"{prefix}erosion", torch.tensor(-1))
