"""v-prediction targets by hand and every sampler landing on x0 with an oracle v denoiser; the rectified-flow Euler
sampler (MONAI's step) against a hand-computed Euler step and an oracle velocity, in 1 step and in 10."""

from __future__ import annotations

import pytest
import torch

from nnugen.diffusion import alphas_cumprod, make_betas, sampling_timesteps, training_target, x0_denoiser
from nnugen.diffusion.rectified_flow import rflow_denoiser
from nnugen.samplers import SAMPLERS, rflow_euler, rflow_timesteps


def test_v_target_by_hand() -> None:
    # abar = 0.64: v = sqrt(abar) eps - sqrt(1 - abar) x0 = 0.8 * (-1) - 0.6 * 2 = -2 (Salimans & Ho 2022)
    x0, eps = torch.tensor([[[[2.0]]]]), torch.tensor([[[[-1.0]]]])
    torch.testing.assert_close(training_target("v", x0, eps, torch.tensor([0.64])), torch.tensor([[[[-2.0]]]]))
    # abar = 0.36: 0.6 * 0.5 - 0.8 * 1 = -0.5
    torch.testing.assert_close(training_target("v", torch.tensor([[[[1.0]]]]), torch.tensor([[[[0.5]]]]),
                                               torch.tensor([0.36])), torch.tensor([[[[-0.5]]]]))


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("spatial", [(3, 3), (2, 2, 2)], ids=["2d", "3d"])
def test_samplers_land_on_x0_with_an_oracle_v_network(name: str, spatial: tuple[int, ...]) -> None:
    abar = alphas_cumprod(make_betas("linear", 1000))
    x0 = torch.linspace(-0.9, 0.9, 2 * torch.Size(spatial).numel(), dtype=torch.float64).view(2, 1, *spatial)

    def oracle_v(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = abar[t].view(-1, *(1,) * (x_t.ndim - 1))
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return a.sqrt() * eps - (1 - a).sqrt() * x0  # the exact v of x0 at x_t

    x = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = SAMPLERS[name](x0_denoiser(oracle_v, abar, "v"), x, abar, sampling_timesteps(1000, 10),
                         generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-8)


def test_rflow_step_is_a_hand_computed_euler_step() -> None:
    """One MONAI step from t = 1000 to 500 with a known velocity: x' = x + v (1000 - 500) / 1000."""
    x = torch.tensor([[[[1.0, -2.0]]]], dtype=torch.float64)
    v = torch.tensor([[[[0.5, 4.0]]]], dtype=torch.float64)
    seen = []
    rflow_euler(rflow_denoiser(lambda x_t, t: v, 1000), x, torch.ones(1000), torch.tensor([1000, 500]),
                callback=lambda i, x_i, x0_hat: seen.append((x_i.clone(), x0_hat.clone())))
    torch.testing.assert_close(seen[0][0], torch.tensor([[[[1.25, 0.0]]]], dtype=torch.float64))
    torch.testing.assert_close(seen[0][1], x + v)  # x0_hat = x + (t/T) v at t = T
    # second step 500 -> 0: x'' = x' + v * 0.5
    torch.testing.assert_close(seen[1][0], torch.tensor([[[[1.5, 2.0]]]], dtype=torch.float64))


def test_rflow_timesteps_are_monai_set_timesteps() -> None:
    assert rflow_timesteps(1000, 4).tolist() == [1000, 750, 500, 250]
    assert rflow_timesteps(1000, 1).tolist() == [1000]
    with pytest.raises(ValueError):
        rflow_timesteps(10, 11)


@pytest.mark.parametrize("steps", [1, 10])
@pytest.mark.parametrize("spatial", [(3, 3), (2, 2, 2)], ids=["2d", "3d"])
def test_rflow_lands_on_a_point_mass(steps: int, spatial: tuple[int, ...]) -> None:
    """For data x0 (a point mass) the exact velocity at x_t is (x0 - x_t) / (t/T): the flow is a straight line."""
    x0 = torch.linspace(-0.9, 0.9, 2 * torch.Size(spatial).numel(), dtype=torch.float64).view(2, 1, *spatial)

    def oracle_velocity(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (x0 - x_t) / (t.double() / 1000).view(-1, *(1,) * (x_t.ndim - 1))

    x = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = rflow_euler(rflow_denoiser(oracle_velocity, 1000), x, torch.ones(1000), rflow_timesteps(1000, steps))
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-12)


def test_rflow_refuses_timesteps_out_of_range() -> None:
    with pytest.raises(ValueError, match="rflow_timesteps"):
        rflow_euler(lambda x, t: x, torch.zeros(1, 1, 2, 2), torch.ones(10), torch.tensor([5, 11]))
