"""The decoder half of the autoencoder: latent ``(B, C_z, *L)`` -> image ``(B, C, *L * prod(strides))``."""

import math
from collections.abc import Sequence

from torch import Tensor, nn

from nnugen.networks.autoencoder_blocks import ResidualBlock, Upsample, autoencoder_norm, run_blocks
from nnugen.networks.nd_layers import conv_nd


class AutoencoderDecoder(nn.Module):
    """``conv_in -> ResidualBlock -> [n_res_blocks x ResidualBlock -> Upsample(strides[s])] per stage, coarsest
    first -> conv_out``: the mirror of :class:`AutoencoderEncoder` (Esser et al. 2021; Rombach et al. 2022).

    Every layer is local: 3-wide convolutions, SiLU, per-voxel :class:`ChannelLayerNorm` (never GroupNorm, whose
    statistics span the whole tensor) and nearest upsampling, and there is no attention. So each output voxel depends
    only on the latent voxels within :attr:`latent_margin` of it, and decoding overlapping latent tiles with at least
    that overlap gives the same result as decoding the whole latent (``decode_chunked``).

    Args:
        latent_channels: channels of the latent C_z.
        features_per_stage: channels of each stage (as in the encoder, finest first).
        strides: downsampling of each encoder stage; undone here in reverse order.
        out_channels: image channels C.
        n_res_blocks: residual blocks per stage, at least 1.
        activation_checkpointing: recompute each block in the backward pass (see ``run_blocks``).
    """

    def __init__(
        self,
        latent_channels: int,
        features_per_stage: Sequence[int],
        strides: Sequence[Sequence[int]],
        out_channels: int,
        n_res_blocks: int = 1,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.activation_checkpointing = activation_checkpointing
        dim = len(strides[0])
        conv = conv_nd(dim)
        channels = features_per_stage[-1]
        # receptive radius in latent voxels per axis: a 3-wide conv at upsampling factor F reaches 1 / F of them
        factor, radius = [1] * dim, [1.0] * dim  # conv_in
        self.conv_in = conv(latent_channels, channels, 3, padding=1)
        layers: list[nn.Module] = [ResidualBlock(channels, channels, dim, "channel")]
        radius = [r + 2 for r in radius]
        for features, stride in zip(reversed(features_per_stage), reversed(strides)):
            for _ in range(n_res_blocks):
                layers.append(ResidualBlock(channels, features, dim, "channel"))
                channels = features
                radius = [r + 2 / f for r, f in zip(radius, factor)]
            if any(s > 1 for s in stride):
                layers.append(Upsample(channels, stride))
                factor = [f * s for f, s in zip(factor, stride)]
                radius = [r + 1 / f for r, f in zip(radius, factor)]
        self.blocks = nn.Sequential(*layers)
        self.conv_out = nn.Sequential(
            autoencoder_norm("channel", channels, dim), nn.SiLU(), conv(channels, out_channels, 3, padding=1)
        )
        radius = [r + 1 / f for r, f in zip(radius, factor)]
        self.latent_margin: tuple[int, ...] = tuple(math.ceil(r - 1e-9) for r in radius)
        """Per axis, the number of latent voxels on either side that an output voxel depends on (rounded up)."""

    def forward(self, z: Tensor) -> Tensor:
        """``(B, C_z, *L) -> (B, out_channels, *L * prod(strides))``."""
        return self.conv_out(run_blocks(self.blocks, self.conv_in(z), self.activation_checkpointing))
