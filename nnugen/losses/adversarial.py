"""The adversarial loss of the autoencoder: MONAI's ``PatchAdversarialLoss`` as generator and discriminator terms."""

from collections.abc import Sequence

from monai.losses import PatchAdversarialLoss
from torch import Tensor, nn

ADVERSARIAL_CRITERIA = ("least_squares", "hinge")


class AdversarialLoss(nn.Module):
    """Generator and discriminator losses on PatchGAN logits (Isola et al. 2017; as used by VQ-GAN, Esser et al.
    2021), computed by MONAI's ``PatchAdversarialLoss``.

    - ``"least_squares"`` (LSGAN, Mao et al. 2017): discriminator ``((D(x) - 1)^2 + D(G(z))^2) / 2``, generator
      ``(D(G(z)) - 1)^2``, on the raw logits (MONAI's extra LeakyReLU is switched off).
    - ``"hinge"`` (Lim & Ye 2017; the criterion of VQ-GAN): discriminator ``(relu(1 - D(x)) + relu(1 + D(G(z)))) / 2``
      on ``tanh`` of the logits (MONAI's choice), generator ``-D(G(z))``-like hinge towards "real".

    Each loss is averaged over patches. The inputs are the discriminator's outputs: a logits tensor, or the list
    MONAI's ``PatchDiscriminator`` returns (every layer's output, logits last), of which the last entry is used.

    Args:
        criterion: ``"least_squares"`` or ``"hinge"``.
    """

    def __init__(self, criterion: str = "least_squares") -> None:
        super().__init__()
        if criterion not in ADVERSARIAL_CRITERIA:
            raise ValueError(f"unknown adversarial criterion {criterion!r}; use one of {ADVERSARIAL_CRITERIA}")
        self.criterion = criterion
        self.loss = PatchAdversarialLoss(criterion=criterion, reduction="mean", no_activation_leastsq=True)

    def generator_loss(self, fake: Tensor | Sequence[Tensor]) -> Tensor:
        """Loss of the generator (the autoencoder), which wants its reconstructions scored as real."""
        return self.loss(_logits(fake), target_is_real=True, for_discriminator=False)

    def discriminator_loss(self, real: Tensor | Sequence[Tensor], fake: Tensor | Sequence[Tensor]) -> Tensor:
        """Loss of the discriminator: real images scored real, reconstructions (detach them first) scored fake."""
        real_term = self.loss(_logits(real), target_is_real=True, for_discriminator=True)
        fake_term = self.loss(_logits(fake), target_is_real=False, for_discriminator=True)
        return 0.5 * (real_term + fake_term)


def adversarial_weight_schedule(iteration: int, warmup: int) -> float:
    """Weight of the adversarial terms at ``iteration``: 0 during the first ``warmup`` iterations, then 1.

    VQ-GAN (Esser et al. 2021) switches the discriminator on only once reconstructions are reasonable
    (``disc_start``; ``adversarial_warmup_iterations`` in the plans), so that it does not overpower an untrained
    decoder.
    """
    if iteration < 0 or warmup < 0:
        raise ValueError(f"iteration ({iteration}) and warmup ({warmup}) must be >= 0")
    return 0.0 if iteration < warmup else 1.0


def _logits(output: Tensor | Sequence[Tensor]) -> Tensor:
    """The logits of a discriminator output: the tensor itself, or the last entry of PatchDiscriminator's list."""
    if isinstance(output, Tensor):
        return output
    if not output or not isinstance(output[-1], Tensor):
        raise TypeError("expected discriminator logits: a tensor, or a list of tensors with the logits last")
    return output[-1]
