import pytest
import torch

import nnugen.networks.time_conditioned_unet as unet_module
from nnugen.networks import TimeConditionedUNet

CONFIGS = {
    "2d": {
        "features_per_stage": (4, 8, 16),
        "kernel_sizes": ((3, 3),) * 3,
        "strides": ((1, 1), (2, 2), (2, 2)),
        "n_conv_per_stage": (2, 2, 2),
        "n_conv_per_stage_decoder": (1, 2),
        "spatial": (8, 12),
    },
    "3d": {
        "features_per_stage": (4, 8, 16),
        "kernel_sizes": ((1, 3, 3), (3, 3, 3), (3, 3, 3)),
        "strides": ((1, 1, 1), (1, 2, 2), (2, 2, 2)),
        "n_conv_per_stage": (1, 2, 2),
        "n_conv_per_stage_decoder": (2, 1),
        "spatial": (4, 16, 16),
    },
}


def make(dim: str, **kwargs) -> tuple[TimeConditionedUNet, torch.Tensor]:
    config = dict(CONFIGS[dim])
    spatial = config.pop("spatial")
    torch.manual_seed(0)
    net = TimeConditionedUNet(2, 3, **{**config, **kwargs})
    return net, torch.randn(2, 2, *spatial)


@pytest.mark.parametrize("norm", ["instance", "group", "batch"])
@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_output_has_input_spatial_shape(dim, norm):
    net, x = make(dim, norm=norm)
    out = net(x, torch.tensor([0, 4]))
    assert out.shape == (2, 3, *x.shape[2:])
    assert torch.isfinite(out).all()


def test_anisotropic_strides_keep_axis_zero():
    net, x = make("3d")
    seen = []
    hooks = [stage.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[2:]))) for stage in net.encoder]
    net(x, torch.tensor([1.0, 2.0]))
    for hook in hooks:
        hook.remove()
    assert seen == [(4, 16, 16), (4, 8, 8), (2, 4, 4)]
    assert net.stage_shapes((4, 16, 16)) == seen
    assert net.divisibility() == (2, 4, 4)
    assert net.encoder[0].blocks[0].conv.kernel_size == (1, 3, 3)
    assert net.encoder[0].blocks[0].conv.padding == (0, 1, 1)
    assert net.encoder[1].blocks[0].conv.stride == (1, 2, 2)
    assert net.decoder[0].upsample.stride == (2, 2, 2)
    assert net.decoder[1].upsample.stride == (1, 2, 2)
    # decoder stages count from the bottleneck up, as in nnU-Net
    assert len(net.decoder[0].stage.blocks) == 2 and len(net.decoder[1].stage.blocks) == 1
    assert net.decoder[1].stage.blocks[0].conv.kernel_size == (1, 3, 3)


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_timestep_changes_output(dim):
    net, x = make(dim)
    net.eval()
    with torch.no_grad():
        outs = [net(x, torch.full((2,), float(t))) for t in range(5)]
    for a in range(5):
        for b in range(a + 1, 5):
            assert not torch.allclose(outs[a], outs[b], atol=1e-5)
    torch.testing.assert_close(net(x, torch.tensor(3)), outs[3])  # a single t is broadcast to the batch


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_gradients_reach_time_mlp(dim):
    net, x = make(dim)
    net(x, torch.tensor([0, 3])).square().mean().backward()
    for layer in (net.time_embedding.mlp[0], net.time_embedding.mlp[2], net.encoder[0].blocks[0].scale_shift[1]):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_activation_checkpointing_gives_identical_results(dim, monkeypatch):
    calls = []
    real_checkpoint = unet_module.checkpoint
    monkeypatch.setattr(unet_module, "checkpoint", lambda *a, **k: calls.append(1) or real_checkpoint(*a, **k))
    results = []
    for on in (False, True):
        net, x = make(dim, activation_checkpointing=on, attention_stages=(2,), dropout=0.1)
        net = net.double().train()
        torch.manual_seed(1)
        out = net(x.double(), torch.tensor([1.0, 2.0]))
        out.square().sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}))
    assert len(calls) == 5  # three encoder stages + two decoder stages, all checkpointed
    (out_a, grads_a), (out_b, grads_b) = results
    torch.testing.assert_close(out_a, out_b)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], msg=name)


def test_checkpointing_skipped_in_eval(monkeypatch):
    monkeypatch.setattr(unet_module, "checkpoint", lambda *a, **k: pytest.fail("checkpoint called in eval"))
    net, x = make("2d", activation_checkpointing=True)
    net.eval()(x, torch.tensor([0, 1]))


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_residuals(dim):
    net, x = make(dim)
    net.eval()
    t = torch.tensor([2, 2])
    shapes = net.stage_shapes(x.shape[2:])
    residuals = [torch.randn(2, c, *s) for c, s in zip(net.features_per_stage, shapes)]
    with torch.no_grad():
        plain = net(x, t)
        torch.testing.assert_close(net(x, t, [None] * len(shapes)), plain)
        assert not torch.allclose(net(x, t, residuals), plain)
        assert not torch.allclose(net(x, t, [None, residuals[1], None]), plain)
    bad = list(residuals)
    bad[1] = torch.randn(2, net.features_per_stage[1] + 1, *shapes[1])
    with pytest.raises(ValueError, match=r"residuals\[1\]"):
        net(x, t, bad)
    with pytest.raises(ValueError, match="one entry per encoder stage"):
        net(x, t, residuals[:2])


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_plain_stages_have_no_shortcut(dim):
    residual, x = make(dim)
    plain = make(dim, residual_stages=False)[0]
    assert all(stage.shortcut is not None for stage in residual.encoder)
    assert all(stage.shortcut is None for stage in plain.encoder)
    assert all(stage.stage.shortcut is None for stage in plain.decoder)
    n_params = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert n_params(plain) < n_params(residual)  # the 1x1 shortcut convs are gone
    t = torch.tensor([0, 1])
    out = plain(x, t)
    assert out.shape == (2, 3, *x.shape[2:])
    out.sum().backward()
    assert all(p.grad is not None for p in plain.parameters())


@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_attention_stages(dim):
    net, x = make(dim, attention_stages=(1, 2), attention_heads=2)
    assert net.encoder[0].attention is None
    assert net.encoder[1].attention is not None and net.encoder[2].attention is not None
    assert net.decoder[0].stage.attention is not None  # level 1, same resolution as encoder stage 1
    assert net.decoder[1].stage.attention is None  # level 0
    out = net(x, torch.tensor([0, 1]))
    assert out.shape == (2, 3, *x.shape[2:])
    out.sum().backward()
    assert net.encoder[2].attention.proj.weight.grad.abs().sum() > 0


def test_input_checks():
    net, x = make("3d")
    t = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(2, 2, 4, 16, 14), t)
    with pytest.raises(ValueError, match="x must be"):
        net(torch.randn(2, 1, 4, 16, 16), t)
    with pytest.raises(ValueError, match="t must"):
        net(x, torch.tensor([0, 1, 2]))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kernel_sizes": ((3, 3),) * 2}, "kernel_sizes has 2 entries"),
        ({"strides": ((1, 1), (2, 2))}, "strides has 2 entries"),
        ({"n_conv_per_stage": (2, 2)}, "n_conv_per_stage has 2 entries"),
        ({"n_conv_per_stage_decoder": (2, 2, 2)}, "n_conv_per_stage_decoder"),
        ({"norm": "layer"}, "unknown norm"),
        ({"kernel_sizes": ((3, 3), (3, 3), (3, 3, 3))}, "same 1-3 axes"),
        ({"kernel_sizes": ((3, 3), (2, 2), (3, 3))}, "odd"),
        ({"n_conv_per_stage": (2, 0, 2)}, "at least one conv"),
        ({"attention_stages": (3,)}, "attention_stages"),
        ({"attention_stages": (0,), "attention_heads": 3}, "heads"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments(change, message):
    with pytest.raises(ValueError, match=message):
        make("2d", **change)
