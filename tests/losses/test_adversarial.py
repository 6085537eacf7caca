import pytest
import torch

from nnugen.losses import AdversarialLoss, adversarial_weight_schedule
from nnugen.networks.patch_discriminator import make_patch_discriminator


@pytest.mark.parametrize("criterion", ["least_squares", "hinge"])
@pytest.mark.parametrize("dim, size, layers", [(2, 32, 3), (3, 12, 2)])
def test_discriminator_and_losses_run_and_train(dim, size, layers, criterion):
    torch.manual_seed(0)
    discriminator = make_patch_discriminator(in_channels=2, spatial_dims=dim, channels=4, num_layers=layers)
    loss = AdversarialLoss(criterion)
    real = torch.randn(2, 2, *(size,) * dim)
    fake = torch.randn(2, 2, *(size,) * dim, requires_grad=True)
    logits = discriminator(real)[-1]
    assert logits.shape == (2, 1, *(size // 2**layers - 2,) * dim)

    d_loss = loss.discriminator_loss(discriminator(real), discriminator(fake.detach()))
    d_loss.backward()
    assert torch.isfinite(d_loss) and all(p.grad is not None for p in discriminator.parameters())
    assert fake.grad is None
    discriminator.zero_grad()
    g_loss = loss.generator_loss(discriminator(fake))
    g_loss.backward()
    assert torch.isfinite(g_loss) and fake.grad is not None and fake.grad.abs().sum() > 0


def test_least_squares_values_and_list_inputs():
    loss = AdversarialLoss("least_squares")
    ones, zeros = torch.ones(2, 1, 3, 3), torch.zeros(2, 1, 3, 3)
    assert loss.generator_loss(ones).item() == 0.0
    assert loss.generator_loss(zeros).item() == 1.0
    assert loss.discriminator_loss(ones, zeros).item() == 0.0
    assert loss.discriminator_loss(zeros, ones).item() == 1.0
    # PatchDiscriminator returns every layer's output: only the last (the logits) counts
    assert loss.generator_loss([torch.randn(2, 4, 6, 6), ones]).item() == 0.0


def test_hinge_prefers_confident_real_logits():
    loss = AdversarialLoss("hinge")
    confident = loss.discriminator_loss(torch.full((1, 1, 2, 2), 10.0), torch.full((1, 1, 2, 2), -10.0))
    confused = loss.discriminator_loss(torch.full((1, 1, 2, 2), -10.0), torch.full((1, 1, 2, 2), 10.0))
    assert confident < confused


def test_bad_criterion_and_too_small_patches():
    with pytest.raises(ValueError, match="criterion"):
        AdversarialLoss("wasserstein")
    with pytest.raises(ValueError, match="num_layers <= 2"):
        make_patch_discriminator(1, 3, num_layers=3, patch_size=(20, 64, 64))
    make_patch_discriminator(1, 3, num_layers=2, patch_size=(20, 64, 64))


def test_weight_schedule_switches_on_after_the_warmup():
    assert [adversarial_weight_schedule(i, 3) for i in range(5)] == [0.0, 0.0, 0.0, 1.0, 1.0]
    assert adversarial_weight_schedule(0, 0) == 1.0
    with pytest.raises(ValueError):
        adversarial_weight_schedule(-1, 10)
