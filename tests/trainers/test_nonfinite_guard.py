"""The non-finite step policy (nnugen/trainers/nonfinite_guard.py): skipped steps are counted and logged, K in a row
stop the run, and skipped steps stay out of the epoch's mean train loss."""

from __future__ import annotations

import numpy as np
import pytest

from nnugen.trainers.nonfinite_guard import NonFiniteGuard, NonFiniteLossError, check_final_weights, finite_outputs


def test_skipped_steps_are_logged_with_the_count_and_k_in_a_row_stop_the_run():
    guard, lines = NonFiniteGuard(3), []
    guard.skip("non-finite loss skipped", "bf16", lines.append)
    guard.record(True, "bf16")
    guard.skip("non-finite gradient: step skipped", "bf16", lines.append)
    guard.skip("non-finite loss skipped", "bf16", lines.append)
    assert lines == ["non-finite loss skipped (1 so far)", "non-finite gradient: step skipped (2 so far)",
                     "non-finite loss skipped (3 so far)"]
    assert (guard.total, guard.consecutive) == (3, 2)
    with pytest.raises(NonFiniteLossError, match="3 consecutive non-finite losses or gradients \\(4 in all\\)"):
        guard.skip("non-finite loss skipped", "bf16", lines.append)
    assert len(lines) == 3  # the step that stops the run is not logged as skipped


def test_only_fp16_gets_the_amp_hint():
    with pytest.raises(NonFiniteLossError, match="set memory.amp to bf16 or fp32"):
        NonFiniteGuard(1).skip("x", "fp16", print)
    with pytest.raises(NonFiniteLossError) as error:
        NonFiniteGuard(1).skip("x", "fp32", print)
    assert "memory.amp" not in str(error.value)


def test_the_mean_train_loss_leaves_out_skipped_steps_unless_all_were_skipped():
    finite, nan = {"loss": np.array(0.5)}, {"loss": np.array(np.nan)}
    assert finite_outputs([nan, finite, nan]) == [finite]
    both_nan = [nan, {"loss": np.array(np.inf)}]
    assert finite_outputs(both_nan) is both_nan
    assert finite_outputs([]) == []


def test_an_epoch_without_one_optimiser_step_stops_the_run():
    guard = NonFiniteGuard(max_consecutive=100)  # far more than an epoch's steps: the consecutive rule never fires
    before = guard.applied
    guard.record(True, "fp32")
    guard.check_epoch(before, epoch=0)  # one step taken: the epoch learned something
    before = guard.applied
    for _ in range(5):
        guard.skip("non-finite loss skipped", "fp32", lambda line: None)
    with pytest.raises(NonFiniteLossError, match="^epoch 1: every step was skipped"):
        guard.check_epoch(before, epoch=1)


def test_final_weights_with_a_nan_stop_before_anything_is_written():
    import torch

    network = torch.nn.Linear(2, 2)
    check_final_weights(network)
    with torch.no_grad():
        network.bias[1] = float("inf")
    with pytest.raises(NonFiniteLossError, match="^the trained weights are not finite \\(bias\\): no "
                                                 "checkpoint_final.pth"):
        check_final_weights(network)
