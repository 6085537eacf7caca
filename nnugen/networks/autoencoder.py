"""The KL or VQ autoencoder of latent diffusion, with nnU-Net-style (anisotropic) per-stage strides."""

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nnugen.networks.autoencoder_blocks import AUTOENCODER_NORMS
from nnugen.networks.autoencoder_decoder import AutoencoderDecoder
from nnugen.networks.autoencoder_encoder import AutoencoderEncoder
from nnugen.networks.diagonal_gaussian import DiagonalGaussian
from nnugen.networks.vector_quantizer import QuantizedLatent, VectorQuantizer

AUTOENCODER_KINDS = ("kl", "vq")


class Autoencoder(nn.Module):
    """Image ``(B, C, *S)`` <-> latent ``(B, latent_channels, *S / prod(strides))``, KL- or VQ-regularised.

    - ``kind="kl"``: the encoder predicts mean and log-variance of a diagonal Gaussian posterior; the regulariser is
      its KL divergence to N(0, I) (VAE, Kingma & Welling 2014), used with a small weight as in the KL-f autoencoders
      of latent diffusion (Rombach et al. 2022).
    - ``kind="vq"``: the encoder output is snapped to a learned codebook; the regulariser is the codebook +
      commitment loss (VQ-VAE, van den Oord et al. 2017; VQ-GAN, Esser et al. 2021).

    Trained with L1 + perceptual + adversarial losses (``nnugen.losses``; Esser et al. 2021), the latent is then the
    space of latent diffusion. Stage ``s`` downsamples by ``strides[s]`` per axis, as in nnU-Net's plans, e.g.
    ``((1, 1, 1), (1, 2, 2), (2, 2, 2))`` halves axis 0 once and axes 1 and 2 twice; the dimension is
    ``len(strides[0])``. Each input size must be a multiple of :attr:`downsampling` along its axis.

    The encoder uses ``norm``; the decoder always uses a per-voxel layer norm over channels and no attention, so that
    its output is local in the latent and ``decode_chunked`` can decode large volumes tile by tile, exactly.

    Args:
        in_channels: image channels C.
        features_per_stage: channels of each stage, e.g. ``(32, 64, 64)``.
        strides: one stride per stage and axis; at most 3 stages downsample.
        latent_channels: C_z.
        kind: ``"kl"`` or ``"vq"``.
        codebook_size: number of codes (VQ only).
        n_res_blocks: residual blocks per stage in the encoder and in the decoder.
        norm: encoder normalisation: ``"group"`` (default), ``"instance"``, ``"batch"`` or ``"channel"``.
        commitment_beta: weight of the VQ commitment loss (0.25, van den Oord et al. 2017).
        ema_codebook: update the VQ codebook by exponential moving averages instead of by gradient.
        activation_checkpointing: recompute the residual blocks in the backward pass instead of storing their
            activations (Chen et al. 2016) while training: same results, less memory, about a third more compute
            (with ``norm="batch"`` the recomputation updates the running statistics twice).
    """

    def __init__(
        self,
        in_channels: int,
        features_per_stage: Sequence[int],
        strides: Sequence[Sequence[int]],
        latent_channels: int,
        kind: str = "kl",
        codebook_size: int = 512,
        n_res_blocks: int = 1,
        norm: str = "group",
        commitment_beta: float = 0.25,
        ema_codebook: bool = False,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        _check_arguments(in_channels, features_per_stage, strides, latent_channels, kind, n_res_blocks, norm)
        self.in_channels = in_channels
        self.kind = kind
        self.latent_channels = latent_channels
        self.strides = tuple(tuple(int(s) for s in stride) for stride in strides)
        self.dim = len(self.strides[0])
        features = tuple(int(f) for f in features_per_stage)
        encoder_out = 2 * latent_channels if kind == "kl" else latent_channels
        self.encoder = AutoencoderEncoder(
            in_channels, features, self.strides, encoder_out, n_res_blocks, norm, activation_checkpointing
        )
        self.decoder = AutoencoderDecoder(
            latent_channels, features, self.strides, in_channels, n_res_blocks, activation_checkpointing
        )
        self.quantizer = (
            VectorQuantizer(codebook_size, latent_channels, beta=commitment_beta, ema=ema_codebook)
            if kind == "vq"
            else None
        )

    def compiled_parts(self) -> list[nn.Module]:
        """What ``torch.compile`` may compile (nnugen.models.compile_policy): the encoder and decoder networks; the
        posterior sampling with its generator and the quantiser's codebook search stay eager."""
        return [self.encoder, self.decoder]

    @property
    def downsampling(self) -> tuple[int, ...]:
        """Per axis, the product of the strides: input size / latent size."""
        return downsampling(self.strides)

    @property
    def latent_margin(self) -> tuple[int, ...]:
        """Per axis, the decoder's receptive radius in latent voxels: the overlap ``decode_chunked`` needs."""
        return self.decoder.latent_margin

    def latent_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial shape of the latent of an input of ``spatial_shape``; ValueError if it is not divisible."""
        if len(spatial_shape) != self.dim or any(n % d for n, d in zip(spatial_shape, self.downsampling)):
            raise ValueError(
                f"spatial shape {tuple(spatial_shape)} must have {self.dim} sizes, each a multiple of "
                f"{self.downsampling} (the product of the autoencoder's strides per axis)"
            )
        return latent_patch(spatial_shape, self.strides)

    def encode(self, x: Tensor) -> DiagonalGaussian | QuantizedLatent:
        """``x (B, C, *S)`` -> the posterior over latents ``(B, C_z, *S / downsampling)``.

        KL: a :class:`DiagonalGaussian` (``sample(generator)``, ``mode()``, ``kl()``). VQ: a :class:`QuantizedLatent`
        (``quantized`` with straight-through gradients, ``indices``, ``loss``; ``mode()`` = ``sample()`` = quantized).
        """
        if x.ndim != self.dim + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be (B, {self.in_channels}, *{self.dim} spatial sizes), got {tuple(x.shape)}")
        self.latent_shape(x.shape[2:])
        h = self.encoder(x)
        if self.quantizer is None:
            return DiagonalGaussian.from_moments(h)
        return self.quantizer(h)

    def decode(self, z: Tensor) -> Tensor:
        """``z (B, C_z, *L) -> (B, C, *L * downsampling)``. For a VQ model ``z`` is decoded as given; a latent
        diffusion model sampling pre-quantisation latents may snap them first with ``self.quantizer(z).quantized``.
        For large latents see ``decode_chunked``."""
        if z.ndim != self.dim + 2 or z.shape[1] != self.latent_channels:
            raise ValueError(f"z must be (B, {self.latent_channels}, *{self.dim} sizes), got {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``x (B, C, *S)`` -> ``(reconstruction (B, C, *S), regulariser loss (scalar))``.

        KL: decodes a posterior sample (drawn from ``generator``) in training mode and the mean in eval mode; the
        loss is the KL divergence per sample (summed over the latent, averaged over the batch). VQ: decodes the
        quantised latent; the loss is codebook + commitment loss. Weight it with ``kl_weight`` / ``codebook_weight``.
        """
        posterior = self.encode(x)
        if isinstance(posterior, QuantizedLatent):
            return self.decode(posterior.quantized), posterior.loss
        z = posterior.sample(generator) if self.training else posterior.mode()
        return self.decode(z), posterior.kl()


def latent_scale_factor(latents: Tensor) -> float:
    """``1 / std(latents)``: the factor that gives the latents of a trained autoencoder unit variance before latent
    diffusion (Rombach et al. 2022, sec. 4.3 / appendix G); estimate it on a batch of encoded training data."""
    std = latents.detach().float().std().item()
    if not math.isfinite(std) or std <= 0.0:
        raise ValueError(
            f"cannot estimate a latent scale factor: the latents' standard deviation is {std}; encode more than one "
            "voxel of real (non-constant) training data"
        )
    return 1.0 / std


def _check_arguments(
    in_channels: int,
    features_per_stage: Sequence[int],
    strides: Sequence[Sequence[int]],
    latent_channels: int,
    kind: str,
    n_res_blocks: int,
    norm: str,
) -> None:
    """Raise ValueError, saying what to fix, on an inconsistent autoencoder description."""
    if kind not in AUTOENCODER_KINDS:
        raise ValueError(f"unknown autoencoder kind {kind!r}; use one of {AUTOENCODER_KINDS}")
    if norm not in AUTOENCODER_NORMS:
        raise ValueError(f"unknown autoencoder norm {norm!r}; use one of {AUTOENCODER_NORMS}")
    if min(in_channels, latent_channels, n_res_blocks) < 1 or not features_per_stage or min(features_per_stage) < 1:
        raise ValueError("in_channels, latent_channels, n_res_blocks and features_per_stage must be positive")
    if len(strides) != len(features_per_stage):
        raise ValueError(f"strides has {len(strides)} entries, features_per_stage {len(features_per_stage)}: one each")
    dim = len(strides[0])
    if dim not in (1, 2, 3) or any(len(s) != dim for s in strides) or any(v < 1 for s in strides for v in s):
        raise ValueError(f"every stride needs the same 1-3 positive entries (one per spatial axis), got {strides}")
    downsamplings = sum(any(v > 1 for v in s) for s in strides)
    if downsamplings > 3:
        raise ValueError(f"{downsamplings} stages downsample; use at most 3 (details are lost beyond, medimgen)")


def downsampling(strides: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Per axis, the product of an autoencoder's strides: input size / latent size."""
    return tuple(math.prod(stride[a] for stride in strides) for a in range(len(strides[0])))


def latent_patch(spatial_shape: Sequence[int], strides: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """The latent size of an input of ``spatial_shape`` (rounded down: the latent patch of an image patch)."""
    return tuple(size // factor for size, factor in zip(spatial_shape, downsampling(strides)))


def latent_sampling_shape(spatial_shape: Sequence[int], factors: Sequence[int],
                          patch: Sequence[int]) -> tuple[int, ...]:
    """The latents sampled for images of ``spatial_shape`` by an autoencoder that downsamples by ``factors``: at
    least ``spatial / factors`` (rounded up) and the latent ``patch`` per axis."""
    return tuple(max(math.ceil(s / f), p) for s, f, p in zip(spatial_shape, factors, patch))
