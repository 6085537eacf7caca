import pickle
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from nnugen.losses import FeaturePerceptualLoss


def extractor(dim: int = 2) -> nn.Sequential:
    conv, norm = (nn.Conv2d, nn.BatchNorm2d) if dim == 2 else (nn.Conv3d, nn.BatchNorm3d)
    torch.manual_seed(0)
    return nn.Sequential(conv(1, 4, 3, padding=1), nn.ReLU(), conv(4, 8, 3, stride=2, padding=1), norm(8))


class Stages(nn.Module):
    """Returns one feature map per stage, as an nnU-Net encoder with return_skips does."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 8, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        first = torch.relu(self.a(x))
        return [first, self.b(first)]


class Evil:
    """Unpickling this creates ``marker``: what a malicious weights file could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.mark.parametrize("dim", [2, 3])
def test_zero_for_equal_inputs_positive_otherwise_and_gradients_reach_x_only(dim):
    net = extractor(dim)
    loss = FeaturePerceptualLoss(net, layers=["0", "3"]).train()
    shape = (2, 1, *(8,) * dim)
    y = torch.randn(shape)
    assert loss(y, y.clone()).item() == 0.0
    x = torch.randn(shape, requires_grad=True)
    value = loss(x, y)
    assert value.ndim == 0 and value > 0
    value.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in net.parameters())
    assert not net.training and torch.equal(net[3].running_mean, torch.zeros(8))  # BatchNorm statistics untouched


def test_extractor_output_list_and_frozen_eval_mode():
    net = Stages()
    loss = FeaturePerceptualLoss(net).train()
    assert not net.training
    x, y = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    assert len(loss.features(x)) == 2
    # unit-normalised features: each per-voxel squared distance is at most 4, so the loss is in [0, 4]
    assert 0 < loss(x, y).item() <= 4.0
    by_hand = FeaturePerceptualLoss(Stages(), layers=None, preprocess=lambda t: 2.0 * t)
    assert by_hand(x, x).item() == 0.0


def test_unknown_layer_names_are_listed():
    with pytest.raises(ValueError, match="no submodule"):
        FeaturePerceptualLoss(extractor(), layers=["encoder.stage9"])


def test_loads_a_state_dict_weights_only(tmp_path):
    trained = extractor()
    with torch.no_grad():
        trained[0].weight.mul_(3.0)
    path = tmp_path / "perceptual.pt"
    torch.save(trained.state_dict(), path)
    x, y = torch.randn(1, 1, 8, 8), torch.randn(1, 1, 8, 8)
    loaded = FeaturePerceptualLoss.from_state_dict(path, extractor(), layers=["0", "2"])
    assert torch.equal(loaded.feature_extractor[0].weight, trained[0].weight)
    assert loaded(x, y).item() == pytest.approx(FeaturePerceptualLoss(trained, layers=["0", "2"])(x, y).item())
    # nnU-Net checkpoints keep the weights under "network_weights"
    torch.save({"network_weights": Stages().state_dict(), "epoch": 3}, tmp_path / "checkpoint.pth")
    FeaturePerceptualLoss.from_state_dict(tmp_path / "checkpoint.pth", Stages())
    with pytest.raises(ValueError, match="do not fit"):
        FeaturePerceptualLoss.from_state_dict(tmp_path / "checkpoint.pth", extractor())


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_loads_torchscript(tmp_path):
    path = tmp_path / "features.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(Stages()), str(path))
    loss = FeaturePerceptualLoss.from_torchscript(path)
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    value = loss(x, torch.randn(1, 1, 8, 8))
    value.backward()
    assert value > 0 and x.grad is not None
    with pytest.raises(ValueError, match="not a TorchScript archive"):
        FeaturePerceptualLoss.from_torchscript(_state_dict_file(tmp_path))


def _state_dict_file(tmp_path: Path) -> Path:
    path = tmp_path / "state.pt"
    torch.save(Stages().state_dict(), path)
    return path


def test_a_missing_file_names_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "nowhere" / "weights.pt"
    for load in (
        lambda: FeaturePerceptualLoss.from_torchscript(missing),
        lambda: FeaturePerceptualLoss.from_state_dict(missing, Stages()),
    ):
        with pytest.raises(ValueError, match="not found") as error:
            load()
        assert str(missing) in str(error.value) and "perceptual_weight" in str(error.value)


@pytest.mark.filterwarnings("ignore:`torch.jit", "ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_malicious_pickle_is_refused_and_runs_nothing(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "perceptual.pt"
    if writer == "torch.save":
        torch.save({"weight": Evil(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(Evil(marker)))
    with pytest.raises(ValueError, match="weights-only") as error:
        FeaturePerceptualLoss.from_state_dict(path, Stages())
    assert "unsafe" in str(error.value)
    with pytest.raises(ValueError):
        FeaturePerceptualLoss.from_torchscript(path)
    assert not marker.exists()
    # the file really is malicious: ordinary unpickling would have run the payload
    other = tmp_path / "proof"
    pickle.loads(pickle.dumps(Evil(other))).close()
    assert other.exists()
