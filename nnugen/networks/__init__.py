"""Denoiser networks: nn.Modules only, importing torch and nothing of nnU-Net."""

from nnugen.networks.attention import SpatialSelfAttention
from nnugen.networks.conditioned_block import ConditionedConvBlock
from nnugen.networks.conditioned_stage import ConditionedStage
from nnugen.networks.decoder_stage import DecoderStage
from nnugen.networks.nd_layers import NORM_KINDS, norm_nd
from nnugen.networks.time_conditioned_unet import TimeConditionedUNet, norm_kind_from_op
from nnugen.networks.time_embedding import TimestepEmbedding, sinusoidal_embedding

__all__ = [
    "NORM_KINDS",
    "ConditionedConvBlock",
    "ConditionedStage",
    "DecoderStage",
    "SpatialSelfAttention",
    "TimeConditionedUNet",
    "TimestepEmbedding",
    "norm_kind_from_op",
    "norm_nd",
    "sinusoidal_embedding",
]
