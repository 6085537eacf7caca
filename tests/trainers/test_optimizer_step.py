"""The trainers' backward pass and optimiser step (nnugen/trainers/optimizer_step.py): gradients clipped to nnU-Net's
norm of 12, and without fp16's GradScaler a non-finite gradient skips the step instead of reaching the weights."""

from __future__ import annotations

import torch

from nnugen.trainers.optimizer_step import MAX_GRAD_NORM, clip_and_step, scaled_backward


def _linear() -> tuple[torch.nn.Linear, torch.optim.SGD]:
    torch.manual_seed(0)
    network = torch.nn.Linear(3, 1)
    return network, torch.optim.SGD(network.parameters(), lr=1.0)


def test_a_finite_gradient_is_clipped_to_norm_12_and_stepped():
    network, optimizer = _linear()
    before = [p.detach().clone() for p in network.parameters()]
    scaled_backward(1000.0 * network(torch.ones(2, 3)).sum(), None)
    assert clip_and_step(network.parameters(), optimizer, None) is True
    step = torch.cat([(b - p.detach()).flatten() for b, p in zip(before, network.parameters())])
    assert MAX_GRAD_NORM == 12
    torch.testing.assert_close(step.norm(), torch.tensor(12.0))  # lr 1: the step is the clipped gradient


def test_a_non_finite_gradient_without_a_scaler_skips_the_step_and_keeps_the_gradient():
    network, optimizer = _linear()
    before = [p.detach().clone() for p in network.parameters()]
    (network(torch.ones(2, 3)).sum() * float("inf")).backward()
    assert clip_and_step(network.parameters(), optimizer, None) is False
    assert all(torch.equal(b, p) for b, p in zip(before, network.parameters()))
    assert network.weight.grad is not None  # the trainer clears it after recording the skipped step


class _RecordingScaler:
    """What ``clip_and_step`` and ``scaled_backward`` call on torch's GradScaler, recorded in order."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def scale(self, loss):
        self.calls.append("scale")
        return loss * 4.0

    def unscale_(self, optimizer):
        self.calls.append("unscale_")

    def step(self, optimizer):
        self.calls.append("step")

    def update(self):
        self.calls.append("update")


def test_with_a_scaler_the_scaler_unscales_steps_and_updates_even_for_a_non_finite_gradient():
    network, optimizer = _linear()
    scaler = _RecordingScaler()
    scaled_backward(network(torch.ones(2, 3)).sum(), scaler)
    torch.testing.assert_close(network.bias.grad, torch.tensor([8.0]))  # 2 samples x the scale of 4
    network.bias.grad.fill_(float("nan"))
    assert clip_and_step(network.parameters(), optimizer, scaler) is True  # the scaler decides to skip, not us
    assert scaler.calls == ["scale", "unscale_", "step", "update"]
