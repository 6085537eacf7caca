import pytest
import torch

from nnugen.networks.autoencoder import Autoencoder, latent_scale_factor
from nnugen.networks.autoencoder_blocks import ChannelLayerNorm
from nnugen.networks.diagonal_gaussian import DiagonalGaussian
from nnugen.networks.vector_quantizer import QuantizedLatent, VectorQuantizer

CASES = {
    "2d": {"strides": ((1, 1), (2, 2), (2, 2)), "spatial": (16, 12), "latent": (4, 3)},
    "3d": {"strides": ((1, 1, 1), (2, 2, 2)), "spatial": (4, 8, 6), "latent": (2, 4, 3)},
    "3d-anisotropic": {"strides": ((1, 1, 1), (1, 2, 2), (2, 2, 2)), "spatial": (4, 16, 8), "latent": (2, 4, 2)},
}


def make(case: str, kind: str = "kl", **kwargs) -> tuple[Autoencoder, torch.Tensor]:
    torch.manual_seed(0)
    strides = CASES[case]["strides"]
    features = (4, 8, 8)[: len(strides)]
    ae = Autoencoder(2, features, strides, latent_channels=3, kind=kind, codebook_size=16, **kwargs)
    return ae, torch.randn(2, 2, *CASES[case]["spatial"])


@pytest.mark.parametrize("kind", ["kl", "vq"])
@pytest.mark.parametrize("case", list(CASES))
def test_shapes_follow_the_strides(case, kind):
    ae, x = make(case, kind)
    latent = CASES[case]["latent"]
    assert ae.latent_shape(x.shape[2:]) == latent
    posterior = ae.encode(x)
    z = posterior.mode()
    assert z.shape == (2, 3, *latent)
    assert posterior.sample(torch.Generator().manual_seed(0)).shape == z.shape
    assert ae.decode(z).shape == x.shape
    reconstruction, regulariser = ae(x)
    assert reconstruction.shape == x.shape and regulariser.ndim == 0 and torch.isfinite(regulariser)


def test_anisotropic_strides_downsample_axis_zero_once():
    ae, _ = make("3d-anisotropic")
    assert ae.dim == 3 and ae.downsampling == (2, 4, 4)
    assert ae.latent_shape((20, 320, 256)) == (10, 80, 64)
    with pytest.raises(ValueError, match="multiple of"):
        ae.latent_shape((5, 16, 16))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "gan"}, "kind"),
        ({"norm": "layer"}, "norm"),
        ({"strides": ((2, 2),) * 4, "features_per_stage": (4,) * 4}, "at most 3"),
        ({"strides": ((1, 1), (2, 2, 2))}, "same 1-3"),
        ({"strides": ((1, 1),)}, "one each"),
    ],
)
def test_bad_arguments_say_what_to_fix(kwargs, message):
    arguments = {"in_channels": 1, "features_per_stage": (4, 8), "strides": ((1, 1), (2, 2)), "latent_channels": 2}
    with pytest.raises(ValueError, match=message):
        Autoencoder(**{**arguments, **kwargs})


@pytest.mark.parametrize("norm", ["group", "instance", "batch", "channel"])
def test_encoder_norms_and_a_local_decoder(norm):
    ae, x = make("2d", norm=norm)
    assert ae(x)[0].shape == x.shape
    local = (ChannelLayerNorm, torch.nn.Conv2d, torch.nn.SiLU, torch.nn.Identity)
    kinds = {type(m) for m in ae.decoder.modules() if not list(m.children())}
    assert kinds <= set(local), f"decoder must stay local for chunked decoding, has {kinds}"


def test_kl_is_positive_and_zero_for_a_standard_normal_posterior():
    ae, x = make("2d")
    posterior = ae.encode(x)
    assert isinstance(posterior, DiagonalGaussian)
    assert posterior.kl() > 0
    standard = DiagonalGaussian(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4))
    assert standard.kl().item() == 0.0
    # KL(N(1, 1) || N(0, 1)) = 0.5 per element, summed over the 48 latent elements of a sample
    shifted = DiagonalGaussian(torch.ones(2, 3, 4, 4), torch.zeros(2, 3, 4, 4))
    assert shifted.kl().item() == pytest.approx(24.0)


def test_kl_sampling_is_seeded_and_eval_decodes_the_mean():
    ae, x = make("2d")
    posterior = ae.encode(x)
    a = posterior.sample(torch.Generator().manual_seed(3))
    b = posterior.sample(torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, posterior.mode())
    ae.train()
    first = ae(x, torch.Generator().manual_seed(1))[0]
    assert torch.equal(first, ae(x, torch.Generator().manual_seed(1))[0])
    assert not torch.equal(first, ae(x, torch.Generator().manual_seed(2))[0])
    ae.eval()
    assert torch.equal(ae(x)[0], ae.decode(posterior.mode()))


def test_vq_indices_codebook_loss_and_straight_through_gradients():
    ae, x = make("3d-anisotropic", kind="vq")
    posterior = ae.encode(x)
    assert isinstance(posterior, QuantizedLatent)
    assert posterior.indices.shape == (2, 2, 4, 2) and posterior.indices.dtype == torch.int64
    assert 0 <= posterior.indices.min() and posterior.indices.max() < 16
    codebook = ae.quantizer.codebook
    assert torch.allclose(posterior.quantized, codebook[posterior.indices].movedim(-1, 1))
    assert torch.isfinite(posterior.loss) and posterior.loss > 0
    assert 1.0 <= posterior.perplexity <= 16.0

    # the reconstruction loss alone reaches the encoder through the non-differentiable argmin
    reconstruction = ae.decode(posterior.quantized)
    (reconstruction - x).abs().mean().backward()
    encoder_grad = ae.encoder.conv_in.weight.grad
    assert encoder_grad is not None and encoder_grad.abs().sum() > 0
    assert codebook.grad is None
    # and the codebook loss moves the codebook
    ae.zero_grad()
    ae(x)[1].backward()
    assert codebook.grad is not None and codebook.grad.abs().sum() > 0


def test_ema_codebook_updates_in_training_mode_only():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(8, 3, ema=True)
    assert "codebook" not in dict(quantizer.named_parameters())
    z = torch.randn(2, 3, 4, 4)
    before = quantizer.codebook.clone()
    quantizer.eval()(z)
    assert torch.equal(quantizer.codebook, before)
    out = quantizer.train()(z)
    assert not torch.equal(quantizer.codebook, before)
    used = out.indices.unique()
    unused = torch.tensor([i for i in range(8) if i not in used.tolist()], dtype=torch.long)
    assert torch.allclose(quantizer.codebook[unused], before[unused], atol=1e-6)  # unused codes stay put
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_a_few_steps_reduce_the_l1_error(kind):
    torch.manual_seed(0)
    ae = Autoencoder(1, (8, 8), ((1, 1), (2, 2)), latent_channels=2, kind=kind, codebook_size=16)
    torch.manual_seed(1)
    x = torch.tanh(torch.randn(2, 1, 8, 8).cumsum(dim=-1) / 3)  # smooth-ish images in [-1, 1]
    optimizer = torch.optim.Adam(ae.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)

    def l1() -> float:
        ae.eval()
        with torch.no_grad():
            return (ae(x)[0] - x).abs().mean().item()

    start = l1()
    ae.train()
    for _ in range(20):
        reconstruction, regulariser = ae(x, generator)
        loss = (reconstruction - x).abs().mean() + (1e-6 if kind == "kl" else 1.0) * regulariser
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert l1() < 0.8 * start


def test_latent_scale_factor_is_one_over_the_std():
    latents = 4.0 * torch.randn(2, 3, 8, 8)
    assert latent_scale_factor(latents) == pytest.approx(1.0 / latents.std().item())
    with pytest.raises(ValueError, match="standard deviation"):
        latent_scale_factor(torch.ones(1, 3, 4, 4))


def test_activation_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        ae, x = make("3d-anisotropic", activation_checkpointing=checkpointing)
        ae.train()
        reconstruction, regulariser = ae(x, torch.Generator().manual_seed(0))
        ((reconstruction - x).abs().mean() + regulariser).backward()
        grads.append(torch.cat([p.grad.flatten() for p in ae.parameters()]))
    torch.testing.assert_close(grads[0], grads[1])
