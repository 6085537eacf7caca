import subprocess
import sys

import pytest
import torch

from nnugen.networks import TimeConditionedUNet, norm_kind_from_op

# plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"] as nnU-Net 2.8's ExperimentPlanner writes it
# for an anisotropic dataset (prostate-like spacing), shortened to 4 stages to stay fast on a CPU.
ANISOTROPIC_3D = {
    "n_stages": 4,
    "features_per_stage": [8, 16, 32, 32],
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[1, 3, 3], [1, 3, 3], [3, 3, 3], [3, 3, 3]],
    "strides": [[1, 1, 1], [1, 2, 2], [1, 2, 2], [2, 2, 2]],
    "n_conv_per_stage": [2, 2, 2, 2],
    "n_conv_per_stage_decoder": [2, 2, 2],
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}

# the 2d configuration of the same planner (Hippocampus-like), with its real feature widths
PLAN_2D = {
    "n_stages": 4,
    "features_per_stage": [32, 64, 128, 256],
    "conv_op": "torch.nn.modules.conv.Conv2d",
    "kernel_sizes": [[3, 3], [3, 3], [3, 3], [3, 3]],
    "strides": [[1, 1], [2, 2], [2, 2], [2, 2]],
    "n_conv_per_stage": [2, 2, 2, 2],
    "n_conv_per_stage_decoder": [2, 2, 2],
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm2d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}


@pytest.mark.parametrize("arch_kwargs", [PLAN_2D, ANISOTROPIC_3D], ids=["2d", "3d"])
def test_builds_from_a_plan(arch_kwargs):
    torch.manual_seed(0)
    net = TimeConditionedUNet.from_arch_kwargs(arch_kwargs, in_channels=3, out_channels=2)
    assert net.features_per_stage == tuple(arch_kwargs["features_per_stage"])
    assert len(net.encoder) == arch_kwargs["n_stages"]
    spatial = tuple(2 * n for n in net.divisibility())  # bottleneck of 2 voxels per axis: instance norm needs >1
    out = net(torch.randn(1, 3, *spatial), torch.tensor([7]))
    assert out.shape == (1, 2, *spatial)


def test_stage_shapes_match_nnunet_plain_conv_unet():
    """The encoder outputs have the shapes of the skips of nnU-Net's own network built from the same plan."""
    unet = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    a = ANISOTROPIC_3D
    reference = unet.PlainConvUNet(
        1, a["n_stages"], a["features_per_stage"], torch.nn.Conv3d, a["kernel_sizes"], a["strides"],
        a["n_conv_per_stage"], 2, a["n_conv_per_stage_decoder"], True, torch.nn.InstanceNorm3d, a["norm_op_kwargs"],
        nonlin=torch.nn.LeakyReLU,
    )  # fmt: skip
    net = TimeConditionedUNet.from_arch_kwargs(a, in_channels=1, out_channels=2)
    x = torch.randn(1, 1, 4, 16, 24)
    with torch.no_grad():
        skips = reference.encoder(x)
    assert [tuple(s.shape[2:]) for s in skips] == net.stage_shapes(x.shape[2:])
    assert [s.shape[1] for s in skips] == list(net.features_per_stage)


def test_extra_overrides_and_dropout():
    plan = {**PLAN_2D, "dropout_op": "torch.nn.modules.dropout.Dropout2d", "dropout_op_kwargs": {"p": 0.2}}
    net = TimeConditionedUNet.from_arch_kwargs(plan, 1, 1, norm="group", attention_stages=(3,), time_embed_dim=64)
    block = net.encoder[0].blocks[0]
    assert isinstance(block.norm, torch.nn.GroupNorm) and block.norm.num_groups == 32
    assert block.dropout.p == 0.2
    assert net.time_embedding.mlp[0].out_features == 64
    assert net.encoder[3].attention is not None


def test_int_shorthands_and_residual_encoder_plans():
    plan = {k: v for k, v in PLAN_2D.items() if k != "n_conv_per_stage"}
    plan.update(features_per_stage=[4, 8, 8, 8], n_blocks_per_stage=[1, 3, 4, 6], n_conv_per_stage_decoder=1)
    net = TimeConditionedUNet.from_arch_kwargs(plan, 1, 1)
    assert [len(stage.blocks) for stage in net.encoder] == [1, 3, 4, 6]
    assert [len(stage.stage.blocks) for stage in net.decoder] == [1, 1, 1]


@pytest.mark.parametrize(
    ("norm_op", "kind"),
    [
        ("torch.nn.modules.instancenorm.InstanceNorm3d", "instance"),
        ("torch.nn.InstanceNorm2d", "instance"),
        ("torch.nn.modules.batchnorm.BatchNorm3d", "batch"),
        ("torch.nn.GroupNorm", "group"),
        (torch.nn.InstanceNorm3d, "instance"),
    ],
)
def test_norm_op_names(norm_op, kind):
    assert norm_kind_from_op(norm_op) == kind


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"norm_op": "torch.nn.LayerNorm"}, "norm_op"),
        ({"norm_op": None}, "norm_op"),
        ({"n_stages": 3}, "n_stages=3"),
        ({"strides": [[1, 1], [2, 2]]}, "strides has 2 entries"),
    ],
)
def test_bad_plans(change, message):
    with pytest.raises(ValueError, match=message):
        TimeConditionedUNet.from_arch_kwargs({**PLAN_2D, **change}, 1, 1)


def test_missing_key():
    plan = {k: v for k, v in PLAN_2D.items() if k != "kernel_sizes"}
    with pytest.raises(ValueError, match="kernel_sizes"):
        TimeConditionedUNet.from_arch_kwargs(plan, 1, 1)


def test_networks_import_torch_only():
    code = (
        "import sys, nnugen.networks; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('nnunetv2', 'dynamic_network_architectures') "
        "or (m.startswith('nnugen.') and not m.startswith('nnugen.networks'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
