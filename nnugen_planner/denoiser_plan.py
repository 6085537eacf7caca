"""The time-conditioned U-Net of each task, derived from the nnU-Net plan's network (``architecture.arch_kwargs``):
same stages, features, kernel sizes and strides (anisotropic ones kept), so nnugen needs no hand tuning."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from nnugen.config import DenoiserSettings
from nnugen.folders.dataset_folders import InputError

MAX_ATTENTION_TOKENS = 4096  # self-attention costs tokens^2; only coarse stages get it


def _tuples(values: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(v) for v in value) for value in values)


def arch_kwargs_of(configuration: dict[str, Any], name: str) -> dict[str, Any]:
    architecture = configuration.get("architecture")
    if not isinstance(architecture, dict) or "arch_kwargs" not in architecture:
        raise InputError(f"configuration '{name}' has no architecture.arch_kwargs; nnugen needs nnU-Net v2.4+ "
                            "plans, re-run nnUNetv2_plan_and_preprocess")
    return architecture["arch_kwargs"]


def denoiser_from_arch(arch: dict[str, Any], patch_size: Sequence[int],
                       drop_downsamplings: int = 0) -> DenoiserSettings:
    """Copy the plan's U-Net. ``drop_downsamplings`` removes that many leading downsampling stages, for a denoiser
    that runs on latents already downsampled by an autoencoder (the latent patch is ``patch / those strides``)."""
    features = list(arch["features_per_stage"])
    kernels = list(_tuples(arch["kernel_sizes"]))
    strides = list(_tuples(arch["strides"]))
    # ResidualEncoderUNet plans count residual blocks instead of convs per stage
    n_conv = list(arch.get("n_conv_per_stage", arch.get("n_blocks_per_stage", [2] * len(features))))
    n_conv_dec = list(arch.get("n_conv_per_stage_decoder", [2] * (len(features) - 1)))
    if drop_downsamplings:
        keep = [0] + list(range(drop_downsamplings + 1, len(features)))
        if len(keep) < 2:
            raise InputError("the autoencoder downsamples as often as the plan's U-Net; "
                                "use fewer autoencoder levels")
        features = [features[i] for i in keep]
        kernels = [kernels[i] for i in keep]
        strides = [tuple(1 for _ in strides[0])] + [strides[i] for i in keep[1:]]
        n_conv = [n_conv[i] for i in keep]
        n_conv_dec = [n_conv_dec[min(i, len(n_conv_dec) - 1)] for i in keep[:-1]]
    norm = str(arch.get("norm_op", "InstanceNorm")).lower()
    norm_name = "batch" if "batchnorm" in norm else "group" if "groupnorm" in norm else "instance"
    coarsest = list(patch_size)
    for stride in strides:
        coarsest = [max(1, c // s) for c, s in zip(coarsest, stride)]
    attention = (len(features) - 1,) if math.prod(coarsest) <= MAX_ATTENTION_TOKENS else ()
    return DenoiserSettings(
        features_per_stage=tuple(int(f) for f in features),
        kernel_sizes=tuple(kernels),
        strides=tuple(strides),
        n_conv_per_stage=tuple(int(n) for n in n_conv),
        n_conv_per_stage_decoder=tuple(int(n) for n in n_conv_dec),
        norm=norm_name,
        time_embed_dim=4 * int(features[0]),
        attention_stages=attention,
    )


def downsampled_patch(patch_size: Sequence[int], strides: Sequence[Sequence[int]]) -> tuple[int, ...]:
    size = list(patch_size)
    for stride in strides:
        size = [s // st for s, st in zip(size, stride)]
    return tuple(size)
