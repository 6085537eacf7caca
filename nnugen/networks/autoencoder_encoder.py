"""The encoder half of the autoencoder: image ``(B, C, *S)`` -> latent features ``(B, C_z, *S / prod(strides))``."""

from collections.abc import Sequence

from torch import Tensor, nn

from nnugen.networks.autoencoder_blocks import Downsample, ResidualBlock, autoencoder_norm, run_blocks
from nnugen.networks.nd_layers import conv_nd


class AutoencoderEncoder(nn.Module):
    """``conv_in -> [Downsample(strides[s]) -> n_res_blocks x ResidualBlock] per stage -> ResidualBlock -> conv_out``.

    The LDM / VQ-GAN encoder (Esser et al. 2021; Rombach et al. 2022) laid out per stage as nnU-Net's plans are: stage
    ``s`` starts by downsampling with ``strides[s]`` (skipped when all ones), then its residual blocks work at
    ``features_per_stage[s]`` channels. No self-attention: its cost grows with the square of the number of voxels,
    which rules it out for 3D patches.

    Args:
        in_channels: image channels C.
        features_per_stage: channels of each stage.
        strides: downsampling of each stage, one stride per spatial axis (anisotropic allowed).
        out_channels: channels of the output, ``2 * latent_channels`` for a KL model (mean and log-variance).
        n_res_blocks: residual blocks per stage, at least 1.
        norm: normalisation of the residual blocks, one of ``AUTOENCODER_NORMS``.
        activation_checkpointing: recompute each block in the backward pass (see ``run_blocks``).
    """

    def __init__(
        self,
        in_channels: int,
        features_per_stage: Sequence[int],
        strides: Sequence[Sequence[int]],
        out_channels: int,
        n_res_blocks: int = 1,
        norm: str = "group",
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.activation_checkpointing = activation_checkpointing
        dim = len(strides[0])
        conv = conv_nd(dim)
        channels = features_per_stage[0]
        self.conv_in = conv(in_channels, channels, 3, padding=1)
        layers: list[nn.Module] = []
        for features, stride in zip(features_per_stage, strides):
            if any(s > 1 for s in stride):
                layers.append(Downsample(channels, stride))
            for _ in range(n_res_blocks):
                layers.append(ResidualBlock(channels, features, dim, norm))
                channels = features
        layers.append(ResidualBlock(channels, channels, dim, norm))  # the "middle" block at the coarsest level
        self.blocks = nn.Sequential(*layers)
        self.conv_out = nn.Sequential(
            autoencoder_norm(norm, channels, dim), nn.SiLU(), conv(channels, out_channels, 3, padding=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, *S) -> (B, out_channels, *S / prod(strides))``."""
        return self.conv_out(run_blocks(self.blocks, self.conv_in(x), self.activation_checkpointing))
