"""Rectified flow through MONAI's RFlowScheduler: forward process, velocity target, x0 <-> velocity, settings."""

from __future__ import annotations

import pytest
import torch

from nnugen.config import DiffusionSettings, NnugenSection
from nnugen.diffusion.rectified_flow import (
    rflow_denoiser,
    rflow_mse_loss,
    rflow_training_input,
    rflow_velocity,
    rflow_velocity_target,
    rflow_x0,
)


@pytest.mark.parametrize("spatial", [(2, 2), (2, 2, 2)], ids=["2d", "3d"])
def test_training_input_by_hand(spatial: tuple[int, ...]) -> None:
    """x_t = (1 - t/T) x0 + (t/T) eps with t from MONAI's uniform draw in {0, ..., T - 1}."""
    x0, eps = torch.full((4, 1, *spatial), 2.0), torch.full((4, 1, *spatial), -1.0)
    torch.manual_seed(0)
    noisy = rflow_training_input(x0, 10, noise=eps)
    torch.manual_seed(0)
    expected_t = (torch.rand(4) * 10).long()  # MONAI's sample_timesteps, drawn the same way
    assert torch.equal(noisy.t, expected_t) and noisy.t.dtype == torch.long
    s = (expected_t.double() / 10).view(4, *(1,) * (len(spatial) + 1))
    torch.testing.assert_close(noisy.x_t.double(), ((1 - s) * 2.0 + s * -1.0).expand_as(x0))
    assert noisy.noise is eps and noisy.noised_x0 is x0


def test_velocity_target_and_loss_by_hand() -> None:
    x0, eps = torch.tensor([[[[2.0, 0.5]]]]), torch.tensor([[[[-1.0, 0.5]]]])
    torch.testing.assert_close(rflow_velocity_target(x0, eps), torch.tensor([[[[3.0, 0.0]]]]))
    # (1 - 3)^2 and (1 - 0)^2, mean 2.5
    torch.testing.assert_close(rflow_mse_loss(torch.ones(1, 1, 1, 2), x0, eps), torch.tensor(2.5))


def test_x0_and_velocity_invert_each_other() -> None:
    gen = torch.Generator().manual_seed(0)
    x_t, v = torch.randn(2, 1, 3, 3, generator=gen, dtype=torch.float64), torch.randn(2, 1, 3, 3, generator=gen,
                                                                                       dtype=torch.float64)
    t = torch.tensor([250, 1000])
    x0_hat = rflow_x0(v, x_t, t, 1000)
    torch.testing.assert_close(x0_hat[1], x_t[1] + v[1])  # s = 1: x0 = x_T + v
    torch.testing.assert_close(x0_hat[0], x_t[0] + 0.25 * v[0])
    torch.testing.assert_close(rflow_velocity(x0_hat, x_t, t, 1000), v)
    clipped = rflow_denoiser(lambda x, s: v, 1000, clip=(-1.0, 1.0))(x_t, t)
    torch.testing.assert_close(clipped, x0_hat.clamp(-1, 1))


def test_rflow_settings_refused_where_unsupported() -> None:
    assert DiffusionSettings().process == "ddpm"
    with pytest.raises(ValueError, match="diffusion.process"):
        DiffusionSettings(process="flow")
    with pytest.raises(ValueError, match="diffusion.loss_weighting"):
        DiffusionSettings(process="rflow", loss_weighting="min_snr")
    with pytest.raises(ValueError, match="diffusion.process"):
        DiffusionSettings(process="rflow", recycling=True)
    rflow = {"diffusion": {"process": "rflow"}, "denoiser": {}, "sampler": {}}
    NnugenSection.from_dict({"tasks": {"ddpm": {**rflow, "generation": {}}}})
    for task, extra in (("segmentation", {}), ("anomaly", {"anomaly": {}})):
        with pytest.raises(ValueError, match=f"tasks.{task}.diffusion.process: .*supports process ddpm only"):
            NnugenSection.from_dict({"tasks": {task: {**rflow, **extra}}})
    with pytest.raises(ValueError, match="tasks.segmentation.diffusion.loss_weighting: .*set it to uniform"):
        NnugenSection.from_dict({"tasks": {"segmentation": {"diffusion": {"loss_weighting": "min_snr"},
                                                            "denoiser": {}, "sampler": {}}}})
