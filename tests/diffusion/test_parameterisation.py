"""Parameterisation: x0 / eps / v conversions are exact inverses, targets match, the denoiser wrapper."""

import pytest
import torch

from nnugen.diffusion import (
    PARAMETERISATIONS,
    alphas_cumprod,
    make_betas,
    predict_eps,
    predict_x0,
    q_sample,
    schedule_at,
    target_mse_loss,
    training_target,
    x0_denoiser,
)

SHAPES = [(3, 2, 6, 5), (3, 2, 4, 5, 3)]


def _setup(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    abar = alphas_cumprod(make_betas("cosine", 1000))
    x0 = torch.randn(shape, generator=g, dtype=torch.float64)
    eps = torch.randn(shape, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 500, 998])
    return abar, x0, eps, t, q_sample(x0, t, abar, eps)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", PARAMETERISATIONS)
def test_round_trips_are_exact(shape: tuple[int, ...], kind: str) -> None:
    abar, x0, eps, t, x_t = _setup(shape)
    abar_t = abar[t]
    target = training_target(kind, x0, eps, abar_t)
    torch.testing.assert_close(predict_x0(target, x_t, abar_t, kind), x0, rtol=0, atol=1e-6)
    torch.testing.assert_close(predict_eps(target, x_t, abar_t, kind), eps, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_v_definition_and_conversions_between_kinds(shape: tuple[int, ...]) -> None:
    abar, x0, eps, t, x_t = _setup(shape)
    abar_b = schedule_at(abar, t, x0)
    v = training_target("v", x0, eps, abar[t])
    torch.testing.assert_close(v, abar_b.sqrt() * eps - (1 - abar_b).sqrt() * x0)
    # x0 -> eps -> v -> x0 through the conversions alone.
    eps_from_x0 = predict_eps(x0, x_t, abar[t], "x0")
    x0_from_v = predict_x0(training_target("v", x0, eps_from_x0, abar[t]), x_t, abar[t], "v")
    torch.testing.assert_close(x0_from_v, x0, rtol=0, atol=1e-6)


def test_abar_may_be_given_broadcastable() -> None:
    abar, x0, eps, t, x_t = _setup(SHAPES[0])
    out = training_target("eps", x0, eps, abar[t])
    torch.testing.assert_close(
        predict_x0(out, x_t, abar[t], "eps"), predict_x0(out, x_t, schedule_at(abar, t, x_t), "eps")
    )


@pytest.mark.parametrize("kind", PARAMETERISATIONS)
def test_x0_denoiser_recovers_x0_from_exact_outputs_and_clips(kind: str) -> None:
    abar, x0, eps, t, x_t = _setup(SHAPES[1])
    x_t32 = x_t.float()

    def model_fn(x: torch.Tensor, t_: torch.Tensor) -> torch.Tensor:
        return training_target(kind, x0, eps, abar[t_]).to(x.dtype)

    denoise = x0_denoiser(model_fn, abar, kind)
    out = denoise(x_t32, t)
    assert out.dtype == torch.float32
    # float32 inputs: the eps / v conversion divides the rounding of x_t and of the output (ulps of their magnitude)
    # by sqrt(abar), ~0.0016 at t = 998, and sqrt(1 - abar) from a float32 abar loses digits where abar ~ 1 (t = 0):
    # 4 ulps through each of the two, per timestep; a wrong conversion is off by O(1)
    if kind == "x0":
        torch.testing.assert_close(out, x0.float(), rtol=0, atol=0)
    else:
        def largest(a: torch.Tensor) -> torch.Tensor:
            return a.abs().amax(dim=tuple(range(1, a.ndim)))

        ulp = torch.finfo(torch.float32).eps
        bound = 4 * ulp * ((largest(x_t) + largest(eps)) / abar[t].sqrt() + largest(eps) / (1 - abar[t]).sqrt())
        error = largest(out.double() - x0)
        assert bool((error <= bound).all()), (error, bound)
        assert float(bound.max()) < 1e-2
    clipped = x0_denoiser(model_fn, abar, kind, clip=(-0.5, 0.5))(x_t32, t)
    assert float(clipped.abs().max()) <= 0.5


def test_target_mse_loss_is_zero_at_target() -> None:
    abar, x0, eps, t, _ = _setup(SHAPES[0])
    assert float(target_mse_loss(training_target("v", x0, eps, abar[t]), "v", x0, eps, abar[t])) < 1e-20
    assert float(target_mse_loss(torch.zeros_like(eps), "eps", x0, eps, abar[t])) == pytest.approx(
        float(eps.pow(2).mean())
    )


def test_bad_kind_and_clip_raise() -> None:
    abar, x0, eps, t, x_t = _setup(SHAPES[0])
    with pytest.raises(ValueError, match="choose one of"):
        predict_x0(x0, x_t, abar[t], "score")
    with pytest.raises(ValueError):
        training_target("epsilon", x0, eps, abar[t])
    with pytest.raises(ValueError):
        x0_denoiser(lambda x, t_: x, abar, "x0", clip=(1.0, -1.0))
