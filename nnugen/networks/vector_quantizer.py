"""Vector quantisation of latents with a learned codebook (VQ-VAE, van den Oord et al. 2017; VQ-GAN, Esser et al.
2021)."""

import contextlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass
class QuantizedLatent:
    """What :class:`VectorQuantizer` returns; the posterior of a VQ autoencoder.

    Attributes:
        quantized: ``(B, C_z, *L)``, the nearest codebook vectors, with the straight-through estimator applied
            (forward: the codes; backward: the gradient is copied to ``latent``, van den Oord et al. 2017, sec. 3.1).
        latent: ``(B, C_z, *L)``, the encoder output before quantisation.
        indices: ``(B, *L)`` int64 in ``[0, codebook_size)``.
        loss: scalar, codebook loss + ``beta`` x commitment loss (the codebook term is left out with EMA updates).
        perplexity: scalar, ``exp(entropy)`` of the code usage in this batch (1 = one code used, K = all equally).
    """

    quantized: Tensor
    latent: Tensor
    indices: Tensor
    loss: Tensor
    perplexity: Tensor

    def mode(self) -> Tensor:
        """The quantised latent (deterministic), so that KL and VQ posteriors answer the same call."""
        return self.quantized

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """The quantised latent; quantisation is deterministic, ``generator`` is ignored."""
        return self.quantized


def _autocast_disabled(device_type: str) -> contextlib.AbstractContextManager:
    """A region where autocast leaves the dtypes alone (a no-op on devices without autocast, e.g. meta)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


class VectorQuantizer(nn.Module):
    """Replace each latent vector (the C_z channels of one voxel) by its nearest codebook vector (squared L2).

    Loss (van den Oord et al. 2017, eq. 3): ``||sg[z] - e||^2 + beta ||z - sg[e]||^2``, the codebook loss moving the
    codes towards the encoder outputs and the commitment loss (``beta = 0.25`` in the paper) keeping the encoder close
    to its codes; ``sg`` stops gradients. With ``ema=True`` the codebook is not learned by gradient but updated as
    exponential moving averages of the vectors assigned to each code (van den Oord et al. 2017, appendix A.1;
    Razavi et al. 2019), with Laplace smoothing of the counts; only the commitment loss remains. Under
    ``torch.distributed`` the EMA statistics are summed over ranks so that every rank keeps the same codebook.
    Distances are computed in float32 (float64 for float64 latents), also under mixed precision: autocast would run
    the ``z @ codebook.T`` product in fp16 / bf16, whose 8-11 bit mantissas cannot tell apart codes closer than about
    1e-3 of ``|z|^2``, so nearby codes would swap and the code usage would depend on the precision.

    Args:
        codebook_size: number of codes K.
        dim: length of a code, the latent channels C_z.
        beta: weight of the commitment loss.
        ema: update the codebook by EMA instead of by gradient.
        decay: EMA decay (gamma).
        eps: Laplace smoothing of the EMA counts.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        beta: float = 0.25,
        ema: bool = False,
        decay: float = 0.99,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if codebook_size < 1 or dim < 1:
            raise ValueError(f"codebook_size ({codebook_size}) and dim ({dim}) must be positive")
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.codebook_size, self.dim, self.beta = codebook_size, dim, beta
        self.ema, self.decay, self.eps = ema, decay, eps
        codebook = torch.empty(codebook_size, dim).uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
        if ema:
            self.register_buffer("codebook", codebook)
            self.register_buffer("cluster_size", torch.ones(codebook_size))  # ones: unused codes stay where they are
            self.register_buffer("embed_sum", codebook.clone())
        else:
            self.codebook = nn.Parameter(codebook)

    def forward(self, z: Tensor) -> QuantizedLatent:
        """Quantise ``z (B, C_z, *L)``; see :class:`QuantizedLatent`."""
        if z.ndim < 3 or z.shape[1] != self.dim:
            raise ValueError(f"expected latents (B, {self.dim}, *spatial), got {tuple(z.shape)}")
        dtype = torch.promote_types(z.dtype, torch.float32)
        flat = z.movedim(1, -1).reshape(-1, self.dim).to(dtype)
        with _autocast_disabled(z.device.type):
            codebook = self.codebook.to(dtype)
            distances = flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ codebook.t() + codebook.pow(2).sum(1)
        indices = distances.argmin(dim=1)
        counts = torch.bincount(indices, minlength=self.codebook_size).float()
        if self.ema and self.training:
            self._ema_update(flat.detach(), indices, counts)
        codes = self.codebook[indices].to(z.dtype).view(*z.shape[:1], *z.shape[2:], self.dim).movedim(-1, 1)

        loss = self.beta * nn.functional.mse_loss(z.float(), codes.detach().float())
        if not self.ema:
            loss = loss + nn.functional.mse_loss(codes.float(), z.detach().float())
        probs = counts / counts.sum()
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        quantized = z + (codes - z).detach()  # straight-through estimator
        return QuantizedLatent(quantized, z, indices.view(z.shape[0], *z.shape[2:]), loss, perplexity)

    @torch.no_grad()
    def _ema_update(self, flat: Tensor, indices: Tensor, counts: Tensor) -> None:
        sums = torch.zeros_like(self.embed_sum).index_add_(0, indices, flat.to(self.embed_sum.dtype))
        counts = counts.to(self.cluster_size.dtype)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
            dist.all_reduce(sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.codebook_size * self.eps) * total
        self.codebook.copy_(self.embed_sum / smoothed.unsqueeze(1))
