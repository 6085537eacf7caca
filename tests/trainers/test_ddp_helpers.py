"""Pieces of nnugen/trainers/ddp.py that need no second process: the accumulation context and the rank weights
written for tests and debugging."""

from __future__ import annotations

import contextlib

import torch

from nnugen.trainers.ddp import RANK_WEIGHTS_VARIABLE, gradient_sync, save_rank_weights


class _Wrapped(torch.nn.Linear):
    def no_sync(self):
        return "no_sync"


def test_only_accumulating_micro_steps_under_ddp_skip_the_all_reduce():
    network = _Wrapped(2, 2)
    assert gradient_sync(network, is_ddp=True, sync=False) == "no_sync"
    assert isinstance(gradient_sync(network, is_ddp=True, sync=True), contextlib.nullcontext)
    assert isinstance(gradient_sync(network, is_ddp=False, sync=False), contextlib.nullcontext)


def test_rank_weights_are_written_only_when_asked_for(tmp_path, monkeypatch):
    monkeypatch.delenv(RANK_WEIGHTS_VARIABLE, raising=False)
    save_rank_weights(1, lambda: (_ for _ in ()).throw(AssertionError("state() computed without the variable")))
    monkeypatch.setenv(RANK_WEIGHTS_VARIABLE, str(tmp_path))
    save_rank_weights(1, lambda: {"network": {"w": torch.ones(2)}, "extra": {}})
    assert [path.name for path in tmp_path.iterdir()] == ["rank_1.pt"]
    assert torch.equal(torch.load(tmp_path / "rank_1.pt", weights_only=True)["network"]["w"], torch.ones(2))
