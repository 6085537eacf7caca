"""The time-conditioned U-Net a task's settings describe (the plan-derived denoiser, with the memory plan's
activation checkpointing): one constructor for every trainer and for inference."""

from __future__ import annotations

from nnugen.config import TaskSettings
from nnugen.networks import TimeConditionedUNet


def denoiser_network(settings: TaskSettings, in_channels: int, out_channels: int,
                     deep_supervision: bool = False) -> TimeConditionedUNet:
    denoiser = settings.denoiser
    if denoiser is None:
        raise ValueError("this task's settings have no denoiser section; re-run nnugen_plan")
    return TimeConditionedUNet(
        in_channels, out_channels, features_per_stage=denoiser.features_per_stage,
        kernel_sizes=denoiser.kernel_sizes, strides=denoiser.strides, n_conv_per_stage=denoiser.n_conv_per_stage,
        n_conv_per_stage_decoder=denoiser.n_conv_per_stage_decoder, norm=denoiser.norm,
        time_embed_dim=denoiser.time_embed_dim, attention_stages=denoiser.attention_stages,
        attention_heads=denoiser.attention_heads, dropout=denoiser.dropout,
        activation_checkpointing=settings.memory.activation_checkpointing, residual_stages=denoiser.residual_stages,
        deep_supervision=deep_supervision)
