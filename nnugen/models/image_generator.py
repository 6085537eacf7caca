"""``ImageGenerator``: pixel-space denoising diffusion (Ho et al. 2020) of image patches in [-1, 1], with four
modes (medimgen; Wang et al. 2023 for label conditioning by concatenation; Mou et al. 2023 for the adapter):

- ``image``: the image channels alone;
- ``joint``: image + label one-hot (in [-1, 1]) generated together as extra channels;
- ``label_conditioned``: the image for a given label map, the map's one-hot concatenated to the input;
- ``label_adapter``: the image for a given label map, through a ``LabelAdapter`` whose residuals are added to the
  encoder of a frozen image-only denoiser; only the adapter trains (and only the adapter has EMA weights).

Conditioned modes drop the label map (replace it by zeros, the empty map) for a fraction ``condition_dropout`` of the
training samples, so that sampling can use classifier-free guidance (Ho & Salimans 2022) with ``guidance_scale``.

Training goes through ``forward(x0, condition)`` (returns the loss, as DDP needs); ``sample`` runs any sampler,
on the EMA weights when there are any, and on volumes larger than the patch through the windowed denoiser.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from nnugen.anomaly.partial_noise import partial_noise_like
from nnugen.config import CONDITIONED_MODES, DiffusionSettings, GenerationSettings, SamplerSettings, TaskSettings
from nnugen.diffusion import alphas_cumprod, make_betas, noisy_training_input, sampling_timesteps, target_mse_loss
from nnugen.diffusion.broadcast import schedule_at, working_dtype
from nnugen.diffusion.loss_weighting import loss_weights
from nnugen.diffusion.noise import randn_like
from nnugen.diffusion.parameterisation import Denoiser, x0_denoiser
from nnugen.diffusion.rectified_flow import rflow_denoiser, rflow_mse_loss, rflow_training_input
from nnugen.diffusion.windowed_denoiser import windowed_denoiser
from nnugen.models.denoiser_from_settings import denoiser_network
from nnugen.models.ema import make_ema, update_ema, warmed_up_decay
from nnugen.models.sliding_windows import nnunet_windows
from nnugen.networks.label_adapter import LabelAdapter
from nnugen.samplers import get_sampler, rflow_euler, rflow_timesteps
from nnugen.samplers.options import sampler_options

Tiling = Callable[[Denoiser], Denoiser]
"""How a patch denoiser becomes one for a sampled volume (the windowed denoiser, or a rank's partitioned share)."""


class ImageGenerator(nn.Module):
    def __init__(self, denoiser: nn.Module, image_channels: int, num_classes: int, patch_size: Sequence[int],
                 diffusion: DiffusionSettings, sampler: SamplerSettings, generation: GenerationSettings,
                 ema_decay: float = 0.0, adapter: nn.Module | None = None, noise: str = "gaussian"):
        super().__init__()
        self.noise = noise  # the training noise eps (partial_noise.py): the anomaly task's ``anomaly.noise``
        self.denoiser = denoiser
        self.adapter = adapter
        if adapter is not None:
            denoiser.requires_grad_(False)  # the base stays frozen; the adapter alone trains
        self.ema = make_ema(self.trained()) if ema_decay > 0 else None
        self.ema_decay = ema_decay
        # EMA updates so far (the decay's warm-up); in the checkpoint, so a resumed run goes on where it stopped
        self.register_buffer("ema_updates", torch.zeros((), dtype=torch.long))
        # its value on the host, read once (then counted here) so that an update does not wait for the device;
        # forgotten when a state dict is loaded
        self._host_ema_updates: int | None = None
        self.register_load_state_dict_post_hook(_forget_host_ema_updates)
        self.image_channels, self.num_classes = image_channels, num_classes
        self.patch_size = tuple(patch_size)
        self.diffusion, self.sampler, self.generation = diffusion, sampler, generation
        betas = make_betas(diffusion.schedule, diffusion.timesteps, diffusion.beta_start, diffusion.beta_end)
        self.register_buffer("alphas_cumprod", alphas_cumprod(betas), persistent=False)
        # the samplers read alpha-bar on the host once per run: a CPU float64 copy (a plain attribute, which .to()
        # leaves in place) spares them a device-to-host sync; the buffer serves the lookups on the device
        self.host_alphas_cumprod = self.alphas_cumprod.clone()

    @classmethod
    def from_settings(cls, settings: TaskSettings, image_channels: int, num_classes: int,
                      patch_size: Sequence[int]) -> ImageGenerator:
        """The generator a task's settings describe (denoiser, and the adapter in mode ``label_adapter``)."""
        mode = settings.generation.mode
        generated, condition = cls.channels(image_channels, num_classes, mode)
        concatenated = condition if mode == "label_conditioned" else 0
        denoiser = denoiser_network(settings, generated + concatenated, generated)
        adapter = LabelAdapter.for_denoiser(denoiser, condition) if mode == "label_adapter" else None
        noise = settings.anomaly.noise if settings.anomaly is not None else "gaussian"  # AnoDDPM trains on its noise
        return cls(denoiser, image_channels, num_classes, patch_size, settings.diffusion, settings.sampler,
                   settings.generation, settings.training.ema_decay, adapter, noise)

    @staticmethod
    def channels(image_channels: int, num_classes: int, mode: str) -> tuple[int, int]:
        """(generated channels, condition channels) for a mode."""
        generated = image_channels + (num_classes if mode == "joint" else 0)
        return generated, num_classes if mode in CONDITIONED_MODES else 0

    def trained(self) -> nn.Module:
        """The part that trains: the adapter when there is one, else the denoiser."""
        return self.adapter if self.adapter is not None else self.denoiser

    def compiled_parts(self) -> list[nn.Module]:
        """What ``torch.compile`` may compile (compile_policy.py): denoiser, adapter and EMA copy; the sampler loop
        and the EMA update stay eager."""
        return [part for part in (self.denoiser, self.adapter, self.ema) if part is not None]

    def train(self, mode: bool = True) -> ImageGenerator:
        super().train(mode)
        if self.adapter is not None:
            self.denoiser.eval()  # frozen: its dropout stays off
        return self

    def model_output(self, x_t: Tensor, t: Tensor, condition: Tensor | None, use_ema: bool = False) -> Tensor:
        trained = self.ema if use_ema and self.ema is not None else self.trained()
        if self.adapter is None:
            inputs = x_t if condition is None else torch.cat([x_t, condition], dim=1)
            return trained(inputs, t.to(x_t.dtype))
        residuals = None if condition is None else trained(condition.to(x_t.dtype))
        return self.denoiser(x_t, t.to(x_t.dtype), residuals)

    def forward(self, x0: Tensor, condition: Tensor | None = None) -> Tensor:
        """Ho et al. 2020 Algorithm 1: the MSE of the output against its target (eps / v / x0) for x0 (B, C, ...).
        In training, a ``condition`` is replaced by zeros (the empty map) in a ``condition_dropout`` of the samples."""
        if condition is not None and self.training and self.generation.condition_dropout > 0:
            keep = torch.rand(condition.shape[0], device=condition.device) >= self.generation.condition_dropout
            condition = condition * keep.to(condition.dtype).view(-1, *(1,) * (condition.ndim - 1))
        eps = None if self.noise == "gaussian" else partial_noise_like(self.noise, x0)
        if self.diffusion.process == "rflow":  # Liu et al. 2023 through MONAI's RFlowScheduler: velocity x0 - eps
            noisy = rflow_training_input(x0, self.diffusion.timesteps, noise=eps)
            return rflow_mse_loss(self.model_output(noisy.x_t, noisy.t, condition), x0, noisy.noise)
        noisy = noisy_training_input(x0, self.alphas_cumprod, noise=eps)
        output = self.model_output(noisy.x_t, noisy.t, condition)
        abar_t = schedule_at(self.alphas_cumprod, noisy.t, output).flatten()
        kind = self.diffusion.model_output
        weights = loss_weights(self.diffusion.loss_weighting, kind, abar_t, self.diffusion.min_snr_gamma)
        return target_mse_loss(output, kind, noisy.noised_x0, noisy.noise, abar_t, weights)

    def update_ema(self) -> None:
        """One EMA update of the trained part's weights (after an optimiser step), with the warmed-up decay."""
        if self.ema is not None:
            if self._host_ema_updates is None:
                self._host_ema_updates = int(self.ema_updates)
            update_ema(self.ema, self.trained(), warmed_up_decay(self.ema_decay, self._host_ema_updates))
            self.ema_updates += 1
            self._host_ema_updates += 1

    def guided_output(self, x_t: Tensor, t: Tensor, condition: Tensor | None, guidance_scale: float) -> Tensor:
        """The EMA model's output; with a condition and ``guidance_scale`` w != 1, classifier-free guidance (Ho &
        Salimans 2022, eq. 6 written with w = 1 + their w): uncond + w (cond - uncond), uncond for the empty map."""
        output = self.model_output(x_t, t, condition, use_ema=True)
        if condition is None or guidance_scale == 1.0:
            return output
        unconditional = self.model_output(x_t, t, torch.zeros_like(condition), use_ema=True)
        # the difference of two close outputs, scaled up by w: in float32 even when the network ran in fp16 / bf16
        dtype = working_dtype(output, x_t)
        output, unconditional = output.to(dtype), unconditional.to(dtype)
        return unconditional + guidance_scale * (output - unconditional)

    def _x0_at(self, guidance_scale: float) -> Callable[[Tensor, Tensor, Tensor | None], Tensor]:
        """x0 estimate in [-1, 1] from the EMA weights (the training weights when there is no EMA)."""

        def x0(x_t: Tensor, t: Tensor, condition: Tensor | None) -> Tensor:
            def output(x: Tensor, s: Tensor) -> Tensor:
                return self.guided_output(x, s, condition, guidance_scale)

            if self.diffusion.process == "rflow":
                return rflow_denoiser(output, self.diffusion.timesteps, clip=(-1.0, 1.0))(x_t, t)
            return x0_denoiser(output, self.alphas_cumprod, self.diffusion.model_output, clip=(-1.0, 1.0))(x_t, t)

        return x0

    @torch.no_grad()
    def sample(self, batch: int, spatial_shape: Sequence[int] | None = None, condition: Tensor | None = None,
               generator: torch.Generator | None = None, sampler: SamplerSettings | None = None,
               device: torch.device | None = None, callback=None, guidance_scale: float | None = None,
               tiling: Tiling | None = None) -> Tensor:
        """Samples (B, generated channels, *spatial) in [-1, 1]; spatial defaults to the training patch. A
        ``condition`` (B, K, *spatial) is the one-hot label map in [-1, 1] for label-conditioned models;
        ``guidance_scale`` defaults to the settings' (1 = no guidance). All noise comes from ``generator``, drawn on
        its device: create it on ``device`` (a CPU generator with a CUDA model draws on the CPU and copies every draw).
        CUDA and CPU generators give different streams, so a seed reproduces a sample on the same device type only.
        ``generator`` may also be a ``PositionalNoise`` (noise per voxel position). ``tiling`` turns the patch
        denoiser into one for the sampled volume (default: nnU-Net's windows over the whole of it); a partitioned
        run passes one for its rank's extent, which is then ``spatial_shape``, with the condition cut to it."""
        settings = sampler or self.sampler
        spatial = tuple(spatial_shape or self.patch_size)
        device = device or self.alphas_cumprod.device
        generated, conditioned = self.channels(self.image_channels, self.num_classes, self.generation.mode)
        if conditioned and (condition is None or condition.shape != (batch, conditioned, *spatial)):
            raise ValueError(f"this model generates images for a label map: pass a condition of shape "
                             f"{(batch, conditioned, *spatial)}")
        x = randn_like(torch.empty((batch, generated, *spatial), device=device), generator)
        scale = self.generation.guidance_scale if guidance_scale is None else guidance_scale
        denoise = volume_denoiser(self._x0_at(scale), condition, self.patch_size, tiling)
        if self.diffusion.process == "rflow":  # MONAI's Euler steps; sampler.name and spacing are for process ddpm
            timesteps = rflow_timesteps(self.diffusion.timesteps, min(settings.steps, self.diffusion.timesteps))
            return rflow_euler(denoise, x, self.host_alphas_cumprod, timesteps, callback=callback)
        timesteps = sampling_timesteps(self.diffusion.timesteps, min(settings.steps, self.diffusion.timesteps),
                                       spacing=settings.spacing, alphas_cumprod=self.host_alphas_cumprod)
        return get_sampler(settings.name)(denoise, x, self.host_alphas_cumprod, timesteps, generator=generator,
                                          callback=callback, **sampler_options(settings.name, eta=settings.eta))


def _forget_host_ema_updates(module: ImageGenerator, incompatible_keys) -> None:
    module._host_ema_updates = None


def volume_denoiser(denoise: Callable[[Tensor, Tensor, Tensor | None], Tensor], condition: Tensor | None,
                    patch_size: Sequence[int], tiling: Tiling | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    """``denoise(x_t, t, condition)`` on patches -> ``denoise(x_t, t)`` on any volume (``tiling``; by default
    windowed, see nnugen.diffusion.windowed_denoiser, with nnU-Net's windows and Gaussian: models/sliding_windows.py).
    The condition rides along as extra channels, so every window gets its own crop of it; the weighted average of
    those identical channels gives the condition back unchanged."""
    if tiling is None:
        def tiling(patch_denoiser: Denoiser) -> Denoiser:
            return windowed_denoiser(patch_denoiser, patch_size, nnunet_windows)

    if condition is None:
        return tiling(lambda x, t: denoise(x, t, None))
    k = condition.shape[1]

    def with_condition(xc: Tensor, t: Tensor) -> Tensor:
        return torch.cat([denoise(xc[:, :-k], t, xc[:, -k:]), xc[:, -k:]], dim=1)

    windowed = tiling(with_condition)
    return lambda x_t, t: windowed(torch.cat([x_t, condition.to(x_t.dtype)], dim=1), t)[:, :-k]
