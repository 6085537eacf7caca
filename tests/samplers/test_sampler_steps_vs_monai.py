"""Single steps against MONAI's DDPMScheduler / DDIMScheduler (the test oracle named in DESIGN.md)."""

import pytest
import torch

from nnugen.diffusion import alphas_cumprod, make_betas, predict_x0
from nnugen.samplers import ddim_step, ddpm_step, dpm_solver_pp_step

schedulers = pytest.importorskip("monai.networks.schedulers")

T = 1000
BETAS = make_betas("linear", T)
ABAR = alphas_cumprod(BETAS)
KINDS = {"sample": "x0", "epsilon": "eps", "v_prediction": "v"}
SHAPES = [(2, 3, 5, 4), (2, 2, 3, 4, 5)]


def _use_our_schedule(scheduler: torch.nn.Module) -> None:
    # Same float64 betas on both sides, so the comparison tests the step math, not float32 cumprod rounding.
    scheduler.betas = BETAS.clone()
    scheduler.alphas = 1 - BETAS
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, 0)


def _inputs(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def test_linear_schedule_equals_monai() -> None:
    monai = schedulers.DDPMScheduler(num_train_timesteps=T, schedule="linear_beta")
    torch.testing.assert_close(BETAS.float(), monai.betas, rtol=0, atol=1e-8)
    torch.testing.assert_close(ABAR.float(), monai.alphas_cumprod, rtol=2e-4, atol=0)


@pytest.mark.parametrize("prediction_type", list(KINDS))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("t", [999, 500, 37, 1, 0])
def test_ddpm_step_matches_monai(prediction_type: str, shape: tuple[int, ...], t: int) -> None:
    monai = schedulers.DDPMScheduler(
        num_train_timesteps=T, schedule="linear_beta", clip_sample=False, prediction_type=prediction_type
    )
    _use_our_schedule(monai)
    sample, output = _inputs(shape, t)
    expected_prev, expected_x0 = monai.step(output, t, sample, generator=torch.Generator().manual_seed(7))

    abar_t, abar_s = float(ABAR[t]), float(ABAR[t - 1]) if t > 0 else 1.0
    x0_hat = predict_x0(output, sample, ABAR[t].expand(shape[0]), KINDS[prediction_type])
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(7), dtype=sample.dtype) if t > 0 else None
    ours = ddpm_step(sample, x0_hat, abar_t, abar_s, noise)
    torch.testing.assert_close(x0_hat, expected_x0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours, expected_prev, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("prediction_type", list(KINDS))
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("t", [999, 500, 37, 19])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step_matches_monai(prediction_type: str, shape: tuple[int, ...], t: int, eta: float) -> None:
    monai = schedulers.DDIMScheduler(
        num_train_timesteps=T,
        schedule="linear_beta",
        clip_sample=False,
        prediction_type=prediction_type,
        set_alpha_to_one=True,
    )
    _use_our_schedule(monai)
    monai.set_timesteps(50)  # MONAI steps from t to t - T // 50 = t - 20
    sample, output = _inputs(shape, t)
    expected_prev, expected_x0 = monai.step(output, t, sample, eta=eta, generator=torch.Generator().manual_seed(3))

    s = t - T // 50
    abar_t, abar_s = float(ABAR[t]), float(ABAR[s]) if s >= 0 else 1.0
    x0_hat = predict_x0(output, sample, ABAR[t].expand(shape[0]), KINDS[prediction_type])
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(3), dtype=sample.dtype)
    ours = ddim_step(sample, x0_hat, abar_t, abar_s, eta, noise)
    torch.testing.assert_close(ours, expected_prev, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t_s", [(999, 979), (500, 480), (19, 0), (0, -1)])
def test_first_order_dpm_solver_pp_is_ddim(t_s: tuple[int, int]) -> None:
    # Lu et al. 2022: DPM-Solver++(1) is DDIM.
    t, s = t_s
    sample, x0_hat = _inputs(SHAPES[1], 0)
    abar_s = float(ABAR[s]) if s >= 0 else 1.0
    torch.testing.assert_close(
        dpm_solver_pp_step(sample, x0_hat, float(ABAR[t]), abar_s),
        ddim_step(sample, x0_hat, float(ABAR[t]), abar_s),
        rtol=1e-10,
        atol=1e-10,
    )


def test_step_argument_errors() -> None:
    sample, x0_hat = _inputs(SHAPES[0], 0)
    with pytest.raises(ValueError):
        ddpm_step(sample, x0_hat, 0.5, 0.4)
    with pytest.raises(ValueError):
        ddpm_step(sample, x0_hat, 0.4, 0.5)  # noise missing before the last step
    with pytest.raises(ValueError):
        ddim_step(sample, x0_hat, 0.4, 0.5, eta=0.5)  # noise missing with eta > 0
    with pytest.raises(ValueError):
        dpm_solver_pp_step(sample, x0_hat, 0.4, 1.0, x0_hat, 0.3)  # second order into the clean sample
    with pytest.raises(ValueError):
        dpm_solver_pp_step(sample, x0_hat, 0.4, 0.5, x0_hat, 0.45)  # u must be noisier than t
