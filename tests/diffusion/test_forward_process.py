"""q_sample: closed form, per-sample timesteps, 2D and 3D, errors."""

import pytest
import torch

from nnugen.diffusion import alphas_cumprod, batch_timesteps, make_betas, q_sample, schedule_at


@pytest.mark.parametrize("shape", [(2, 1, 4, 4), (2, 3, 2, 4, 3)])
def test_q_sample_closed_form(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(1)
    abar = alphas_cumprod(make_betas("linear", 10))
    x0, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    t = torch.tensor([0, 9])
    x_t = q_sample(x0, t, abar, noise)
    assert x_t.shape == x0.shape and x_t.dtype == x0.dtype
    for b in range(2):
        a = float(abar[t[b]])
        torch.testing.assert_close(x_t[b], a**0.5 * x0[b] + (1 - a) ** 0.5 * noise[b])


def test_schedule_at_and_batch_timesteps() -> None:
    abar = alphas_cumprod(make_betas("linear", 10))
    x = torch.zeros(3, 2, 4, 4, 4, dtype=torch.float16)
    t = batch_timesteps(4, x)
    assert t.dtype == torch.long and t.tolist() == [4, 4, 4]
    values = schedule_at(abar, t, x)
    # half-precision tensors get float32 schedule values: the diffusion math runs in at least float32
    assert values.shape == (3, 1, 1, 1, 1) and values.dtype == torch.float32


def test_q_sample_errors() -> None:
    abar = alphas_cumprod(make_betas("linear", 10))
    x0 = torch.zeros(2, 1, 4, 4)
    with pytest.raises(ValueError):
        q_sample(x0, torch.tensor([0, 10]), abar, x0)
    with pytest.raises(ValueError):
        q_sample(x0, torch.tensor([0.0, 1.0]), abar, x0)
    with pytest.raises(ValueError):
        q_sample(x0, torch.tensor([0, 1]), abar, torch.zeros(2, 1, 4, 5))
