"""Distances between the feature distributions of real and synthetic images, ``(N, F)`` feature vectors each:

- the Fréchet distance between Gaussians fitted to both (Heusel et al. 2017, FID when the features are Inception's):
  ``|mu_r - mu_s|^2 + tr(S_r + S_s - 2 (S_r S_s)^(1/2))``, the value of MONAI's ``FIDMetric`` (tested against it)
  computed without the F x F matrix square root (see ``frechet_distance``);
- MMD^2 with a Gaussian kernel (Gretton et al. 2012, the biased estimate of their eq. 5), the bandwidth set to the
  median distance among all vectors. It is >= 0, exactly 0 for identical sets, and compares every moment, not only
  the mean. MONAI's ``MMDMetric`` is the unbiased estimate with a linear kernel: it compares means only, and for two
  identical sets it gives ``-2 tr(S) / N`` rather than 0, so it is not used here.

With few samples both are biased upwards; quote them next to the same distance between two sets of real images.
"""

from __future__ import annotations

import torch
from torch import Tensor


def frechet_distance(real: Tensor, synthetic: Tensor) -> float:
    """The Fréchet distance of the Gaussians fitted to ``real`` and ``synthetic`` (covariances with N - 1).

    With R and S the centred feature rows, S_r = R^T R / (n_r - 1) and S_s = S^T S / (n_s - 1), the nonzero
    eigenvalues of S_r S_s are those of (R S^T)(R S^T)^T / ((n_r - 1)(n_s - 1)), so tr (S_r S_s)^(1/2) is the sum of
    the singular values of the (n_r, n_s) matrix R S^T / sqrt((n_r - 1)(n_s - 1)). Exact for any N and F, and
    O(n_r n_s F): the F x F square root MONAI takes costs about 1 s for nnU-Net's 992 features, and is of a singular
    matrix whenever a set has fewer vectors than features, as a demo's or a benchmark's sets do."""
    _check(real, synthetic)
    real, synthetic = real.double(), synthetic.double()
    r, s = real - real.mean(dim=0), synthetic - synthetic.mean(dim=0)
    r_scale, s_scale = real.shape[0] - 1, synthetic.shape[0] - 1
    trace_root = torch.linalg.svdvals(r @ s.T).sum() / (r_scale * s_scale) ** 0.5
    mean_gap = (real.mean(dim=0) - synthetic.mean(dim=0)).pow(2).sum()
    return float(mean_gap + r.pow(2).sum() / r_scale + s.pow(2).sum() / s_scale - 2 * trace_root)


def gaussian_mmd(real: Tensor, synthetic: Tensor, bandwidth: float | None = None) -> float:
    """MMD^2 = mean k(r, r') + mean k(s, s') - 2 mean k(r, s), k(a, b) = exp(-|a - b|^2 / (2 bandwidth^2))."""
    _check(real, synthetic)
    both = torch.cat([real, synthetic]).double()
    squared = torch.cdist(both, both).pow(2)
    if bandwidth is None:
        off_diagonal = squared[~torch.eye(len(both), dtype=torch.bool)]
        bandwidth = float(off_diagonal.median().sqrt()) or 1.0
    kernel = torch.exp(-squared / (2 * bandwidth**2))
    n = real.shape[0]
    return float(kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean())


def _check(real: Tensor, synthetic: Tensor) -> None:
    if real.ndim != 2 or synthetic.ndim != 2 or real.shape[1] != synthetic.shape[1]:
        raise ValueError(f"expected two (N, F) feature sets with the same F, got {tuple(real.shape)} and "
                         f"{tuple(synthetic.shape)}")
    if min(real.shape[0], synthetic.shape[0]) < 2:
        raise ValueError("each feature set needs at least 2 vectors (a covariance needs two)")
