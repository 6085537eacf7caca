"""The trainers' training precision (nnugen/trainers/training_precision.py): the plan's AMP dtype on a GPU, no
autocast on the CPU or for fp32, fp16 where a GPU has no bf16."""

from __future__ import annotations

import contextlib

import pytest
import torch

from nnugen.trainers.training_precision import training_amp_dtype, training_autocast

CUDA = torch.device("cuda", 0)  # only its type is read: no GPU needed


@pytest.mark.parametrize("amp", ["bf16", "fp16", "fp32"])
def test_the_cpu_never_autocasts(amp):
    assert training_amp_dtype(torch.device("cpu"), amp, pytest.fail) is None


@pytest.mark.parametrize(("amp", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", None)])
def test_a_gpu_gets_the_planned_dtype(monkeypatch, amp, dtype):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert training_amp_dtype(CUDA, amp, pytest.fail) is dtype


def test_a_gpu_without_bf16_falls_back_to_fp16_and_says_so(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    lines = []
    assert training_amp_dtype(CUDA, "bf16", lines.append) is torch.float16
    assert lines == ["This GPU has no bf16: using fp16 AMP with gradient scaling instead"]


def test_no_dtype_opens_no_autocast_and_a_dtype_opens_one():
    assert isinstance(training_autocast(torch.device("cpu"), None), contextlib.nullcontext)
    with training_autocast(torch.device("cpu"), torch.bfloat16):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
