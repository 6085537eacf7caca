"""The PatchGAN discriminator of the autoencoder's adversarial loss, from MONAI."""

from collections.abc import Sequence

from monai.networks.nets import PatchDiscriminator


def make_patch_discriminator(
    in_channels: int,
    spatial_dims: int,
    channels: int = 32,
    num_layers: int = 3,
    norm: str = "batch",
    patch_size: Sequence[int] | None = None,
) -> PatchDiscriminator:
    """MONAI's ``PatchDiscriminator``: a PatchGAN (Isola et al. 2017, sec. 3.2.2) that scores overlapping patches.

    An initial 4-wide conv and ``num_layers`` more, all but the last halving every axis and doubling ``channels``,
    with LeakyReLU(0.2), then a last 4-wide conv to one logit per patch, as in VQ-GAN (Esser et al. 2021). Its
    ``forward`` returns a list of every layer's output, the logits last; ``nnugen.losses.AdversarialLoss`` takes
    either that list or the logits.

    Each axis of size ``n`` gives ``n // 2**num_layers - 2`` logits, so an axis needs at least
    ``3 * 2**num_layers`` voxels; pass ``patch_size`` to have that checked here rather than fail inside a conv.

    Args:
        in_channels: image channels.
        spatial_dims: 2 or 3.
        channels: channels of the first layer.
        num_layers: number of downsampling layers (3 for the 70x70 PatchGAN of Isola et al. 2017).
        norm: ``"batch"`` (Isola et al. 2017, MONAI's default) or ``"instance"``.
        patch_size: optional training patch size to validate.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if num_layers < 1 or channels < 1 or in_channels < 1:
        raise ValueError("in_channels, channels and num_layers must be positive")
    if norm not in ("batch", "instance"):
        raise ValueError(f"discriminator norm must be 'batch' or 'instance', got {norm!r}")
    if patch_size is not None:
        smallest = min(int(n) for n in patch_size)
        if len(patch_size) != spatial_dims or smallest // 2**num_layers < 3:
            usable = max((k for k in range(1, 8) if smallest // 2**k >= 3), default=0)
            raise ValueError(
                f"a PatchGAN with num_layers={num_layers} needs every axis of the {spatial_dims}D patch to have at "
                f"least {3 * 2**num_layers} voxels, got {tuple(patch_size)}; "
                + (f"use num_layers <= {usable}" if usable else "use a larger patch")
            )
    return PatchDiscriminator(
        spatial_dims=spatial_dims,
        channels=channels,
        in_channels=in_channels,
        out_channels=1,
        num_layers_d=num_layers,
        norm=norm.upper(),
    )
