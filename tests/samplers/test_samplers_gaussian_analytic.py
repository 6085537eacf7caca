"""Samplers against closed forms: Gaussian data x0 ~ N(mu, s^2) has an exact MMSE denoiser.

E[x0 | x_t] = mu + s^2 sqrt(abar) / (abar s^2 + 1 - abar) (x_t - sqrt(abar) mu), and the probability-flow ODE maps
x_t to mu + s / sqrt(abar s^2 + 1 - abar) (x_t - sqrt(abar) mu) (Song et al. 2021, score SDE).
"""

import math

import pytest
import torch

from nnugen.diffusion import alphas_cumprod, make_betas, sampling_timesteps
from nnugen.samplers import SAMPLERS, ddim, ddim_invert

MU, S = 0.5, 0.3
N = 20000
SCHEDULE = {kind: alphas_cumprod(make_betas(kind, 1000)) for kind in ("linear", "cosine")}


def gaussian_denoiser(abar: torch.Tensor):
    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # Samplers pass one timestep for the whole batch; a scalar keeps 1000 steps over 20000 samples fast.
        assert bool((t == t[0]).all())
        a = float(abar[int(t[0])])
        return MU + S**2 * math.sqrt(a) / (a * S**2 + 1 - a) * (x - math.sqrt(a) * MU)

    return denoise


def exact_flow(x_t: torch.Tensor, a: float) -> torch.Tensor:
    return MU + S / math.sqrt(a * S**2 + 1 - a) * (x_t - math.sqrt(a) * MU)


def _noise(shape: tuple[int, ...] = (N, 1, 1, 1), seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def ddpm_law(abar: torch.Tensor, timesteps: torch.Tensor) -> tuple[float, float]:
    """Mean and std of respaced DDPM's output (Ho et al. 2020 eq. 7) for this data, by propagating N(m, v)."""
    a_seq = [float(abar[t]) for t in timesteps] + [1.0]
    m, v = 0.0, 1.0
    for a, a_prev in zip(a_seq[:-1], a_seq[1:]):
        k = S**2 * math.sqrt(a) / (a * S**2 + 1 - a)
        beta = 1 - a / a_prev
        c_x0, c_xt = math.sqrt(a_prev) * beta / (1 - a), math.sqrt(1 - beta) * (1 - a_prev) / (1 - a)
        m, v = (c_x0 * k + c_xt) * m + c_x0 * (MU - k * math.sqrt(a) * MU), (c_x0 * k + c_xt) ** 2 * v
        v += (1 - a_prev) / (1 - a) * beta
    return m, math.sqrt(v)


@pytest.mark.parametrize(
    ("name", "schedule", "steps", "std_tol"),
    [
        ("ddpm", "linear", 1000, 0.01),
        ("ddpm", "cosine", 1000, 0.01),
        # Respaced DDPM with beta-tilde variance under-disperses on big steps (it ignores Var[x0 | x_t], Bao et al.
        # 2022): its exact law here has std 0.272, checked tightly below.
        ("ddpm", "cosine", 50, 0.035),
        ("ddim", "cosine", 50, 0.02),
        ("dpm_solver++", "cosine", 20, 0.02),
    ],
)
def test_sampled_distribution_matches_the_data(name: str, schedule: str, steps: int, std_tol: float) -> None:
    abar = SCHEDULE[schedule]
    out = SAMPLERS[name](
        gaussian_denoiser(abar),
        _noise(),
        abar,
        sampling_timesteps(1000, steps),
        generator=torch.Generator().manual_seed(1),
    )
    assert float(out.mean()) == pytest.approx(MU, abs=0.015)
    assert float(out.std()) == pytest.approx(S, abs=std_tol)


@pytest.mark.parametrize(("schedule", "steps"), [("linear", 50), ("cosine", 50), ("cosine", 7)])
def test_respaced_ddpm_matches_its_exact_law(schedule: str, steps: int) -> None:
    abar = SCHEDULE[schedule]
    timesteps = sampling_timesteps(1000, steps)
    out = SAMPLERS["ddpm"](
        gaussian_denoiser(abar), _noise(), abar, timesteps, generator=torch.Generator().manual_seed(2)
    )
    mean, std = ddpm_law(abar, timesteps)
    assert float(out.mean()) == pytest.approx(mean, abs=0.01)
    assert float(out.std()) == pytest.approx(std, abs=0.006)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_deterministic_samplers_follow_the_probability_flow(schedule: str) -> None:
    abar = SCHEDULE[schedule]
    x = _noise((2000, 1, 1, 1))
    exact = exact_flow(x, float(abar[-1]))
    errors = {}
    for steps in (20, 100):
        for name in ("ddim", "dpm_solver++"):
            out = SAMPLERS[name](gaussian_denoiser(abar), x, abar, sampling_timesteps(1000, steps))
            errors[name, steps] = float((out - exact).abs().max())
    # Both converge; the second-order solver is closer at equal cost.
    for name in ("ddim", "dpm_solver++"):
        assert errors[name, 100] < errors[name, 20] / 2
    assert errors["dpm_solver++", 20] < errors["ddim", 20]
    assert errors["dpm_solver++", 100] < errors["ddim", 100]
    assert errors["dpm_solver++", 100] < 0.02


def test_convergence_orders_on_log_snr_steps() -> None:
    # A fine training grid (T = 100000) so that steps evenly spaced in log-SNR (Lu et al. 2022) land where asked.
    train_timesteps = 100_000
    abar = alphas_cumprod(make_betas("linear", train_timesteps))
    log_snr = 0.5 * torch.log(abar / (1 - abar))
    x = _noise((2000, 1, 1, 1))
    exact = exact_flow(x, float(abar[-1]))
    errors = {}
    for steps in (40, 80):
        targets = torch.linspace(float(log_snr[-1]), float(log_snr[0]), steps, dtype=torch.float64)
        timesteps = torch.searchsorted(-log_snr, -targets).clamp(max=train_timesteps - 1).unique_consecutive()
        for name in ("ddim", "dpm_solver++"):
            out = SAMPLERS[name](gaussian_denoiser(abar), x, abar, timesteps)
            errors[name, steps] = float((out - exact).abs().max())
    # Halving the step size: DDIM (first order) halves its error, DPM-Solver++(2M) (second order) quarters it.
    assert 1.6 < errors["ddim", 40] / errors["ddim", 80] < 2.5
    assert errors["dpm_solver++", 40] / errors["dpm_solver++", 80] > 3.2
    assert errors["dpm_solver++", 80] < 0.005


@pytest.mark.parametrize("shape", [(4, 1, 8, 8), (2, 2, 4, 4, 4)])
def test_ddim_inversion_then_ddim_reconstructs(shape: tuple[int, ...]) -> None:
    abar = SCHEDULE["cosine"]
    denoise = gaussian_denoiser(abar)
    x0 = (MU + S * _noise(shape, seed=3)).float()
    errors = []
    for steps in (50, 200):
        timesteps = sampling_timesteps(1000, steps)
        calls: list[int] = []

        def record(i: int, x: torch.Tensor, x0_hat: torch.Tensor, calls: list[int] = calls) -> None:
            calls.append(i)

        z = ddim_invert(denoise, x0, abar, timesteps.flip(0), callback=record)
        assert z.shape == x0.shape and z.dtype == x0.dtype and calls == list(range(steps))
        # The latent is (close to) the exact flow's noise, i.e. whitened data.
        assert float(z.std()) == pytest.approx(1.0, abs=0.25)
        errors.append(float((ddim(denoise, z, abar, timesteps) - x0).abs().max()))
    assert errors[1] < 0.03
    assert errors[1] < errors[0] / 2


def test_ddim_inversion_rejects_decreasing_timesteps() -> None:
    abar = SCHEDULE["cosine"]
    with pytest.raises(ValueError, match="increasing"):
        ddim_invert(gaussian_denoiser(abar), _noise((1, 1, 2, 2)), abar, sampling_timesteps(1000, 5))
