"""nnU-Net-format checkpoints load weights only (nnugen/folders/checkpoint_files.py): NumPy scalars and arrays, which
nnU-Net's own entries hold, are the only non-tensor types allowed; anything else is refused in one line, without being
built. nnugen's RNG entry is tensors and plain numbers."""

from __future__ import annotations

import fractions

import numpy as np
import pytest
import torch

from nnugen.folders.checkpoint_files import CheckpointError, load_nnunet_checkpoint, restore_rng_states, rng_states


def _checkpoint(**extra) -> dict:
    return {"network_weights": {"w": torch.ones(2)}, "optimizer_state": {}, "grad_scaler_state": None,
            "logging": {"train_losses": [np.float32(0.5), np.float64(0.25)]}, "_best_ema": np.float32(0.7),
            "current_epoch": 3, "init_args": {"plans": {"a": 1}, "configuration": "2d", "fold": 0,
                                              "dataset_json": {}, "device": torch.device("cpu")},
            "trainer_name": "NnugenDiffSegTrainer", "inference_allowed_mirroring_axes": (0, 1), **extra}


def test_nnunets_entries_and_an_older_numpy_rng_tuple_load_weights_only(tmp_path):
    path = tmp_path / "checkpoint_latest.pth"
    torch.save(_checkpoint(nnugen_rng={"torch": torch.get_rng_state(), "numpy": np.random.get_state()}), path)
    loaded = load_nnunet_checkpoint(str(path), torch.device("cpu"))
    assert loaded["_best_ema"] == np.float32(0.7) and loaded["logging"]["train_losses"][1] == 0.25
    assert isinstance(loaded["nnugen_rng"]["numpy"][1], np.ndarray)


def test_anything_else_is_refused_by_name_without_being_built(tmp_path):
    path = tmp_path / "checkpoint_latest.pth"
    torch.save(_checkpoint(extra=fractions.Fraction(1, 3)), path)
    with pytest.raises(CheckpointError, match="holds fractions.Fraction, which nnugen does not unpickle"):
        load_nnunet_checkpoint(str(path), torch.device("cpu"))


@pytest.mark.parametrize("old_format", [False, True])
def test_numpy_rng_state_round_trips_through_a_weights_only_file(tmp_path, old_format):
    np.random.seed(5)
    np.random.random(3)
    states = rng_states()
    if old_format:
        states["numpy"] = np.random.get_state()
    else:
        assert isinstance(states["numpy"]["key"], torch.Tensor)
    path = tmp_path / "rng.pth"
    torch.save(_checkpoint(nnugen_rng=states), path)
    expected = np.random.random(4)
    np.random.seed(0)
    restore_rng_states(load_nnunet_checkpoint(str(path), torch.device("cpu"))["nnugen_rng"])
    np.testing.assert_array_equal(np.random.random(4), expected)
