"""Zero-initialised conditioning: the untrained denoiser ignores the noisy mask and the timestep, and still learns
to use them (the zeroed weights get gradients)."""

import pytest
import torch

from nnugen.networks import TimeConditionedUNet
from nnugen.networks.zero_init import zero_input_channels, zero_time_modulation


@pytest.mark.parametrize("residual", [False, True])
def test_output_depends_on_the_image_alone_until_trained(residual):
    torch.manual_seed(0)
    net = TimeConditionedUNet(4, 3, (8, 16, 16), ((3, 3),) * 3, ((1, 1), (2, 2), (2, 2)), (2, 2, 2), (1, 1),
                              residual_stages=residual)
    image, mask, other_mask = torch.randn(2, 1, 16, 16), torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    before = net(torch.cat([image, mask], 1), torch.tensor([0, 4]))
    assert not torch.allclose(before, net(torch.cat([image, other_mask], 1), torch.tensor([0, 4])))
    zero_input_channels(net, 1)
    zero_time_modulation(net)
    output = net(torch.cat([image, mask], 1), torch.tensor([0, 4]))
    torch.testing.assert_close(output, net(torch.cat([image, other_mask], 1), torch.tensor([3, 1])))
    output.square().mean().backward()
    first = net.encoder[0].blocks[0].conv.weight
    assert bool(first.grad[:, 1:].abs().sum() > 0)  # the mask channels learn
    modulation = net.encoder[1].blocks[0].scale_shift[-1].weight
    assert bool(modulation.grad.abs().sum() > 0)  # and so does the time conditioning


def test_first_channel_must_exist():
    net = TimeConditionedUNet(2, 2, (4, 8), ((3, 3),) * 2, ((1, 1), (2, 2)), (1, 1), (1,))
    with pytest.raises(ValueError, match="first must lie in"):
        zero_input_channels(net, 2)
