"""The denoiser: nnU-Net's plain U-Net topology, conditioned on the diffusion timestep.

Built from the same fields nnU-Net's plans carry for ``PlainConvUNet`` (``architecture.arch_kwargs``), so the
network follows the plan's anisotropic kernels and strides (e.g. kernel ``[1, 3, 3]``, stride ``[1, 2, 2]``),
which MONAI's ``DiffusionModelUNet`` cannot.
"""

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from nnugen.networks.conditioned_stage import ConditionedStage
from nnugen.networks.decoder_stage import DecoderStage
from nnugen.networks.nd_layers import NORM_KINDS, conv_nd
from nnugen.networks.time_embedding import TimestepEmbedding

_NORM_BY_OP_NAME = {"instancenorm": "instance", "groupnorm": "group", "batchnorm": "batch"}


def norm_kind_from_op(norm_op: Any) -> str:
    """Map nnU-Net's ``norm_op`` (a dotted name such as ``"torch.nn.modules.instancenorm.InstanceNorm3d"``, or
    the class itself) to the ``norm`` argument of :class:`TimeConditionedUNet`."""
    name = norm_op if isinstance(norm_op, str) else getattr(norm_op, "__name__", repr(norm_op))
    leaf = name.rsplit(".", 1)[-1].lower()
    for prefix, kind in _NORM_BY_OP_NAME.items():
        if leaf.startswith(prefix):
            return kind
    raise ValueError(
        f"norm_op {norm_op!r} has no time-conditioned counterpart; use an InstanceNorm, GroupNorm or BatchNorm "
        f"plan, or pass norm= one of {NORM_KINDS} to from_arch_kwargs"
    )


class TimeConditionedUNet(nn.Module):
    """U-Net ``(x (B, C_in, *S), t (B,)) -> (B, C_out, *S)`` with AdaGN time conditioning in every conv block.

    Denoising network of DDPM (Ho et al. 2020) with the improvements of Dhariwal & Nichol 2021 (scale-shift
    conditioning, multi-head attention at coarse stages, residual stages), laid out as nnU-Net's ``PlainConvUNet``
    (Isensee et al. 2021): encoder stage ``s`` is a first conv with stride ``strides[s]`` plus
    ``n_conv_per_stage[s] - 1`` more, with kernel ``kernel_sizes[s]``; the decoder upsamples by transposed convs
    (kernel = stride), concatenates the skip, and ``n_conv_per_stage_decoder[i]`` blocks run in decoder stage ``i``,
    counted from the bottleneck up as in nnU-Net; a final 1x1 conv gives ``out_channels``.

    The spatial dimension is ``len(kernel_sizes[0])``; each spatial size of the input must be divisible by the
    product of the strides along its axis (nnU-Net's patch sizes are).

    Args:
        in_channels: input channels C_in (e.g. noisy segmentation + image channels).
        out_channels: output channels C_out.
        features_per_stage: channels of each encoder stage.
        kernel_sizes: odd conv kernel per stage and axis.
        strides: stride of each stage's first conv per axis (``strides[0]`` is usually all ones).
        n_conv_per_stage: conv blocks per encoder stage.
        n_conv_per_stage_decoder: conv blocks per decoder stage (``len(features_per_stage) - 1`` entries).
        norm: ``"instance"`` (nnU-Net's), ``"group"`` or ``"batch"``.
        time_embed_dim: width of the timestep embedding; default ``4 * features_per_stage[0]`` (Ho et al. 2020).
        attention_stages: encoder stage indices with self-attention after their convs; the decoder stage at the
            same resolution gets it too.
        attention_heads: heads of every attention block; must divide the channels of those stages.
        dropout: drop probability inside the conv blocks.
        activation_checkpointing: recompute each stage in the backward pass instead of storing its activations
            (Chen et al. 2016, ``torch.utils.checkpoint``), while training with grad enabled. Same results, less
            memory, about a third more compute. Avoid with ``norm="batch"``: the recomputation updates the running
            statistics a second time.
        residual_stages: a shortcut around every stage's convs (Dhariwal & Nichol 2021); False gives plain stages
            as in ``PlainConvUNet`` (cheaper, see :class:`ConditionedStage`).
        deep_supervision: 1x1 output heads on the decoder stages at the resolution levels
            ``auxiliary_levels`` (1 ... stages - 3, the levels nnU-Net's deep supervision weights above zero), read
            by :meth:`forward_with_auxiliary`; ``forward`` always returns the full-resolution output only.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        features_per_stage: Sequence[int],
        kernel_sizes: Sequence[Sequence[int]],
        strides: Sequence[Sequence[int]],
        n_conv_per_stage: Sequence[int],
        n_conv_per_stage_decoder: Sequence[int],
        norm: str = "instance",
        time_embed_dim: int | None = None,
        attention_stages: Sequence[int] = (),
        attention_heads: int = 1,
        dropout: float = 0.0,
        activation_checkpointing: bool = False,
        residual_stages: bool = True,
        deep_supervision: bool = False,
    ) -> None:
        super().__init__()
        n_stages = len(features_per_stage)
        _check_arguments(in_channels, out_channels, features_per_stage, kernel_sizes, strides, n_conv_per_stage)
        if len(n_conv_per_stage_decoder) != n_stages - 1 or min(n_conv_per_stage_decoder, default=1) < 1:
            raise ValueError(
                f"n_conv_per_stage_decoder needs {n_stages - 1} positive entries (stages - 1), "
                f"got {tuple(n_conv_per_stage_decoder)}"
            )
        if norm not in NORM_KINDS:
            raise ValueError(f"unknown norm {norm!r}; use one of {NORM_KINDS}")
        if any(not 0 <= s < n_stages for s in attention_stages):
            raise ValueError(
                f"attention_stages {tuple(attention_stages)} must be encoder stage indices in [0, {n_stages})"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.features_per_stage = tuple(int(c) for c in features_per_stage)
        self.kernel_sizes = tuple(tuple(int(k) for k in ks) for ks in kernel_sizes)
        self.strides = tuple(tuple(int(s) for s in st) for st in strides)
        self.dim = len(self.kernel_sizes[0])
        self.activation_checkpointing = activation_checkpointing
        embed_dim = 4 * self.features_per_stage[0] if time_embed_dim is None else time_embed_dim
        attention = set(attention_stages)

        self.time_embedding = TimestepEmbedding(self.features_per_stage[0], embed_dim)
        channels = (in_channels, *self.features_per_stage)
        common = {"embed_dim": embed_dim, "norm": norm, "dropout": dropout, "attention_heads": attention_heads,
                  "residual": residual_stages}
        self.encoder = nn.ModuleList(
            ConditionedStage(
                channels[s],
                channels[s + 1],
                self.kernel_sizes[s],
                self.strides[s],
                n_conv_per_stage[s],
                **common,
                attention=s in attention,
            )
            for s in range(n_stages)
        )
        # decoder[i] runs from the bottleneck up: it upsamples stage n-1-i's output to resolution level n-2-i
        self.decoder = nn.ModuleList(
            DecoderStage(
                below_channels=self.features_per_stage[level + 1],
                skip_channels=self.features_per_stage[level],
                kernel_size=self.kernel_sizes[level],
                upsample_stride=self.strides[level + 1],
                n_convs=n_conv_per_stage_decoder[i],
                **common,
                attention=level in attention,
            )
            for i, level in enumerate(range(n_stages - 2, -1, -1))
        )
        self.head = conv_nd(self.dim)(self.features_per_stage[0], out_channels, 1)
        self.auxiliary_levels = tuple(range(1, n_stages - 2)) if deep_supervision else ()
        self.auxiliary_heads = nn.ModuleList(
            conv_nd(self.dim)(self.features_per_stage[level], out_channels, 1) for level in self.auxiliary_levels
        )

    @classmethod
    def from_arch_kwargs(
        cls, arch_kwargs: Mapping[str, Any], in_channels: int, out_channels: int, **extra: Any
    ) -> "TimeConditionedUNet":
        """Build from nnU-Net's ``plans["configurations"][c]["architecture"]["arch_kwargs"]``.

        Reads ``n_stages``, ``features_per_stage``, ``kernel_sizes``, ``strides``, ``n_conv_per_stage`` (or a
        residual-encoder plan's ``n_blocks_per_stage``, one conv block per residual block),
        ``n_conv_per_stage_decoder``, ``norm_op`` and ``dropout_op`` / ``dropout_op_kwargs``. ``conv_op`` is ignored
        (the dimension comes from the kernel sizes), and so are ``conv_bias`` and ``nonlin`` (the blocks always use
        biases and LeakyReLU(0.01)). ``extra`` sets or overrides any constructor argument, e.g.
        ``attention_stages=(4, 5)``.
        """
        try:
            n_stages = int(arch_kwargs["n_stages"])
            per_stage = arch_kwargs.get("n_conv_per_stage", arch_kwargs.get("n_blocks_per_stage"))
            if per_stage is None:
                raise KeyError("n_conv_per_stage")
            kwargs: dict[str, Any] = {
                "features_per_stage": _per_stage(arch_kwargs["features_per_stage"], n_stages),
                "kernel_sizes": arch_kwargs["kernel_sizes"],
                "strides": arch_kwargs["strides"],
                "n_conv_per_stage": _per_stage(per_stage, n_stages),
                "n_conv_per_stage_decoder": _per_stage(arch_kwargs["n_conv_per_stage_decoder"], n_stages - 1),
            }
        except KeyError as e:
            raise ValueError(
                f"arch_kwargs lacks {e}; pass plans['configurations'][c]['architecture']['arch_kwargs']"
            ) from None
        if len(kwargs["features_per_stage"]) != n_stages:
            raise ValueError(f"n_stages={n_stages} but features_per_stage has {len(kwargs['features_per_stage'])}")
        if "norm" not in extra:
            kwargs["norm"] = norm_kind_from_op(arch_kwargs.get("norm_op"))
        if arch_kwargs.get("dropout_op") is not None:
            kwargs["dropout"] = float((arch_kwargs.get("dropout_op_kwargs") or {}).get("p", 0.5))
        kwargs.update(extra)
        return cls(in_channels, out_channels, **kwargs)

    def stage_shapes(self, spatial_shape: Sequence[int]) -> list[tuple[int, ...]]:
        """Spatial shape of each encoder stage's output for an input of ``spatial_shape``; ValueError if a
        size is not divisible by the strides."""
        if len(spatial_shape) != self.dim:
            raise ValueError(f"expected {self.dim} spatial sizes, got {tuple(spatial_shape)}")
        shapes, shape = [], tuple(int(n) for n in spatial_shape)
        for s, stride in enumerate(self.strides):
            if any(n % st for n, st in zip(shape, stride)):
                raise ValueError(
                    f"spatial shape {tuple(spatial_shape)} is not divisible by the strides up to stage {s}; "
                    f"use a patch size divisible by {self.divisibility()}"
                )
            shape = tuple(n // st for n, st in zip(shape, stride))
            shapes.append(shape)
        return shapes

    def divisibility(self) -> tuple[int, ...]:
        """Per-axis factor every input size must be a multiple of (the product of the strides)."""
        return tuple(math.prod(st[a] for st in self.strides) for a in range(self.dim))

    def forward(self, x: Tensor, t: Tensor, residuals: Sequence[Tensor | None] | None = None) -> Tensor:
        """Predict from a noisy input at timestep ``t``.

        Args:
            x: ``(B, C_in, *S)``.
            t: timesteps ``(B,)`` (a single value is broadcast to the batch), as indices of the training schedule.
            residuals: optional, one entry per encoder stage, each ``None`` or a tensor of that stage's output shape
                ``(B, features_per_stage[s], *stage_shapes(S)[s])`` added to it (adapter / ControlNet-style
                conditioning: Mou et al. 2023, Zhang et al. 2023).

        Returns:
            ``(B, C_out, *S)``.
        """
        return self.head(self._decoder_outputs(x, t, residuals)[0])

    def forward_with_auxiliary(
        self, x: Tensor, t: Tensor, residuals: Sequence[Tensor | None] | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """``forward``'s output and, with ``deep_supervision``, one ``(B, C_out, *stage_shapes(S)[level])`` output
        per level of ``auxiliary_levels`` (Lee et al. 2015; nnU-Net's deep supervision), from the same pass."""
        levels = self._decoder_outputs(x, t, residuals)
        auxiliary = [head(levels[level]) for level, head in zip(self.auxiliary_levels, self.auxiliary_heads)]
        return self.head(levels[0]), auxiliary

    def _decoder_outputs(self, x: Tensor, t: Tensor, residuals: Sequence[Tensor | None] | None) -> list[Tensor]:
        """The features at every resolution level, full resolution first: the decoder stages' outputs, and the
        bottleneck's at the coarsest level."""
        if x.ndim != self.dim + 2 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must be (B, {self.in_channels}, *{self.dim} spatial), got {tuple(x.shape)}")
        shapes = self.stage_shapes(x.shape[2:])
        if residuals is not None:
            self._check_residuals(residuals, x.shape[0], shapes)
        t = torch.as_tensor(t, device=x.device)
        if t.numel() == 1:
            t = t.reshape(1).expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},) or be a single value, got {tuple(t.shape)}")
        emb = self.time_embedding(t)

        skips, h = [], x
        for s, stage in enumerate(self.encoder):
            h = self._run(stage, h, emb)
            if residuals is not None and residuals[s] is not None:
                h = h + residuals[s]
            skips.append(h)
        levels = [h]
        for stage, skip in zip(self.decoder, reversed(skips[:-1])):
            h = self._run(stage, h, skip, emb)
            levels.append(h)
        return levels[::-1]

    def _run(self, stage: nn.Module, *args: Tensor) -> Tensor:
        if self.activation_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(stage, *args, use_reentrant=False)
        return stage(*args)

    def _check_residuals(self, residuals: Sequence[Tensor | None], batch: int, shapes: list[tuple[int, ...]]) -> None:
        if len(residuals) != len(self.encoder):
            raise ValueError(f"residuals needs one entry per encoder stage ({len(self.encoder)}), got {len(residuals)}")
        for s, (r, c, shape) in enumerate(zip(residuals, self.features_per_stage, shapes)):
            if r is not None and tuple(r.shape) != (batch, c, *shape):
                raise ValueError(f"residuals[{s}] must have shape {(batch, c, *shape)}, got {tuple(r.shape)}")


def _per_stage(value: int | Sequence[int], n: int) -> list[int]:
    """nnU-Net allows a single int for a per-stage list."""
    return [int(value)] * n if isinstance(value, int) else [int(v) for v in value]


def _check_arguments(
    in_channels: int,
    out_channels: int,
    features_per_stage: Sequence[int],
    kernel_sizes: Sequence[Sequence[int]],
    strides: Sequence[Sequence[int]],
    n_conv_per_stage: Sequence[int],
) -> None:
    """Raise ValueError, saying what to fix, on an inconsistent encoder description."""
    n = len(features_per_stage)
    if n < 1 or in_channels < 1 or out_channels < 1 or min(features_per_stage) < 1:
        raise ValueError("in_channels, out_channels and features_per_stage (at least one stage) must be positive")
    lengths = {"kernel_sizes": len(kernel_sizes), "strides": len(strides), "n_conv_per_stage": len(n_conv_per_stage)}
    for name, length in lengths.items():
        if length != n:
            raise ValueError(f"{name} has {length} entries but features_per_stage has {n}; give one per stage")
    dim = len(kernel_sizes[0])
    if dim not in (1, 2, 3) or any(len(k) != dim for k in kernel_sizes) or any(len(s) != dim for s in strides):
        raise ValueError(f"every kernel size and stride needs the same 1-3 axes; got {kernel_sizes}, {strides}")
    if any(s < 1 for st in strides for s in st):
        raise ValueError(f"strides must be positive, got {strides}")
    if min(n_conv_per_stage) < 1:
        raise ValueError(f"every encoder stage needs at least one conv, got n_conv_per_stage={tuple(n_conv_per_stage)}")
