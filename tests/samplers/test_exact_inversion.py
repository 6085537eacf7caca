"""Fixed-point DDIM inversion (Pan et al. 2023) round-trips exactly on an analytic Gaussian denoiser; plain DDIM
inversion does not, by the amount its closed form says.

The denoiser. Data x0 ~ N(mu, s^2 I) and x_t = sqrt(a) x0 + sqrt(1 - a) eps, eps ~ N(0, I), a = abar_t, make (x0, x_t)
jointly Gaussian per element: E[x_t] = sqrt(a) mu, Var[x_t] = a s^2 + 1 - a, Cov[x0, x_t] = sqrt(a) s^2. The MMSE
x0 predictor, which a perfectly trained network learns (Tweedie; Song et al. 2021's Gaussian toy cases), is the
linear regression
    x0_hat(x_t) = E[x0 | x_t] = mu + k(a) (x_t - sqrt(a) mu),  k(a) = s^2 sqrt(a) / (a s^2 + 1 - a),
and its noise estimate eps_hat = (x_t - sqrt(a) x0_hat) / sqrt(1 - a) = sqrt(1 - a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a)
= e1(a) x_t + e0(a), affine in x_t.

The steps, in Song et al. 2021 eq. 13's form (c(a_from, a_to) = sqrt(1 - a_to) - sqrt(a_to (1 - a_from) / a_from)):
    DDIM step t -> s:           x_s = sqrt(a_s / a_t) x_t + c(a_t, a_s) eps_hat(x_t, a_t)
    plain inversion s -> t:     x_t = sqrt(a_t / a_s) x_s + c(a_s, a_t) eps_hat(x_s, a_t)   (network read at x_s)
    exact inversion s -> t:     x_t = sqrt(a_t / a_s) x_s + c(a_s, a_t) eps_hat(x_t, a_t)   (implicit; solved in
                                closed form, as eps_hat is affine: x_t = (sqrt(a_t / a_s) x_s + c e0) / (1 - c e1))
Every map is affine per element, so the round trip x0 -> z -> x0' is x0' = A x0 + B with scalars A, B computed here
by composing the maps in plain Python floats, independently of nnugen's code: the plain round trip's error is
|(A - 1) x0 + B|, the exact one's A = 1, B = 0.
"""

from __future__ import annotations

import math

import pytest
import torch

from nnugen.diffusion import alphas_cumprod, make_betas, sampling_timesteps
from nnugen.samplers import ddim, ddim_invert
from nnugen.samplers.ddim_inversion import fixed_point_refine

MU, S = 0.2, 0.5
ABAR = alphas_cumprod(make_betas("linear", 1000))


def gaussian_denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x0_hat = mu + k(a) (x_t - sqrt(a) mu), per sample t (B,)."""
    a = ABAR[t].to(x_t.dtype).view(-1, *(1,) * (x_t.ndim - 1))
    return MU + S**2 * a.sqrt() / (a * S**2 + 1 - a) * (x_t - a.sqrt() * MU)


def _eps_coefficients(a: float) -> tuple[float, float]:
    """eps_hat(x_t) = e1 x_t + e0 at alpha-bar a."""
    e1 = math.sqrt(1 - a) / (a * S**2 + 1 - a)
    return e1, -e1 * math.sqrt(a) * MU


def _c(a_from: float, a_to: float) -> float:
    return math.sqrt(1 - a_to) - math.sqrt(a_to * (1 - a_from) / a_from)


def closed_form_round_trip(steps: int, exact: bool) -> tuple[float, float, float, float]:
    """(A_z, B_z, A, B): the inversion z = A_z x0 + B_z and the round trip x0' = A x0 + B, by composing affine maps."""
    abar = [float(ABAR[t]) for t in sampling_timesteps(1000, steps).flip(0)]
    a_s, (scale, shift) = 1.0, (1.0, 0.0)
    for a_t in abar:
        e1, e0 = _eps_coefficients(a_t)
        c, r = _c(a_s, a_t), math.sqrt(a_t / a_s)
        if exact:
            scale, shift = r * scale / (1 - c * e1), (r * shift + c * e0) / (1 - c * e1)
        else:
            scale, shift = (r + c * e1) * scale, (r + c * e1) * shift + c * e0
        a_s = a_t
    a_z, b_z = scale, shift
    for a_t, a_next in zip(abar[::-1], [*abar[::-1][1:], 1.0]):
        e1, e0 = _eps_coefficients(a_t)
        c, r = _c(a_t, a_next), math.sqrt(a_next / a_t)
        scale, shift = (r + c * e1) * scale, (r + c * e1) * shift + c * e0
    return a_z, b_z, scale, shift


def _x0() -> torch.Tensor:
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (MU + S * noise).clamp(-1, 1)


@pytest.mark.parametrize("steps", [5, 20, 50])
def test_fixed_point_inversion_round_trips_and_plain_does_not(steps: int) -> None:
    x0, timesteps = _x0(), sampling_timesteps(1000, steps)
    plain = ddim(gaussian_denoiser, ddim_invert(gaussian_denoiser, x0, ABAR, timesteps.flip(0)), ABAR, timesteps)
    z = ddim_invert(gaussian_denoiser, x0, ABAR, timesteps.flip(0), iterations=500, tolerance=1e-13)
    exact = ddim(gaussian_denoiser, z, ABAR, timesteps)
    exact_error, plain_error = float((exact - x0).abs().max()), float((plain - x0).abs().max())
    assert exact_error < 1e-4
    assert plain_error > 100 * exact_error
    # nnugen's plain inversion is the closed form's, to round-off; the exact latent is the implicit equations' solution.
    _, _, a, b = closed_form_round_trip(steps, exact=False)
    assert float((plain - (a * x0 + b)).abs().max()) < 1e-9
    a_z, b_z, a, b = closed_form_round_trip(steps, exact=True)
    assert (a, b) == (pytest.approx(1.0, abs=1e-12), pytest.approx(0.0, abs=1e-12))
    assert float((z - (a_z * x0 + b_z)).abs().max()) < 1e-6


def test_plain_inversion_error_at_five_steps_is_the_hand_checked_value() -> None:
    # The closed form's error, pinned: 0.78875 in the model's units, for data of std 0.5 (plain inversion at 5
    # uniform steps loses most of the image).
    _, _, a, b = closed_form_round_trip(5, exact=False)
    x0 = _x0()
    expected = float(((a - 1) * x0 + b).abs().max())
    timesteps = sampling_timesteps(1000, 5)
    plain = ddim(gaussian_denoiser, ddim_invert(gaussian_denoiser, x0, ABAR, timesteps.flip(0)), ABAR, timesteps)
    assert float((plain - x0).abs().max()) == pytest.approx(expected, rel=1e-9)
    assert expected == pytest.approx(0.78875, abs=1e-5)


def test_tolerance_stops_each_sample_on_its_own() -> None:
    # Two samples, one already at its fixed point: it keeps its value while the other still iterates.
    a_s, a_t = 1.0, float(ABAR[300])
    t = torch.tensor([300, 300])
    x_s = _x0()[:2]
    e1, e0 = _eps_coefficients(a_t)
    c, r = _c(a_s, a_t), math.sqrt(a_t / a_s)
    fixed = (r * x_s + c * e0) / (1 - c * e1)
    start = torch.stack([fixed[0], x_s[1]])
    calls: list[int] = []

    def denoise_all(group: list[torch.Tensor]) -> list[torch.Tensor]:
        calls.append(group[0].shape[0])
        return [gaussian_denoiser(group[0], t)]

    [out] = fixed_point_refine(denoise_all, [x_s], [start], [(a_s, a_t)], 200, 1e-12)
    assert float((out[0] - fixed[0]).abs().max()) <= 1e-12
    assert float((out[1] - fixed[1]).abs().max()) < 1e-10
    assert len(calls) < 200


@pytest.mark.parametrize(("iterations", "tolerance"), [(-1, 0.0), (1.5, 0.0), (True, 0.0), (2, -1.0),
                                                       (2, float("nan"))])
def test_bad_iteration_settings_are_refused(iterations, tolerance) -> None:
    timesteps = sampling_timesteps(1000, 5).flip(0)
    with pytest.raises(ValueError, match="iterations|tolerance"):
        ddim_invert(gaussian_denoiser, _x0(), ABAR, timesteps, iterations=iterations, tolerance=tolerance)


def test_fixed_iterations_without_tolerance_read_nothing_on_the_host() -> None:
    # tolerance 0 runs every iteration and never asks the device whether a sample converged (meta: no data to read)
    meta = torch.device("meta")
    calls: list[int] = []

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return 0.5 * x

    x0 = torch.zeros(2, 1, 8, 8, device=meta)
    out = ddim_invert(denoise, x0, ABAR, sampling_timesteps(1000, 5).flip(0), iterations=3, tolerance=0.0)
    assert out.device == meta and len(calls) == 5 * (1 + 3)
