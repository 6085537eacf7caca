"""The random state a seeded run continues after ``--c``: a checkpoint is read onto the CPU whatever the training
device, so its RNG states restore on a GPU machine too (the meta device stands in for CUDA here: a state mapped onto
it holds no data, as a CUDA tensor holds none that ``torch.set_rng_state`` accepts); CUDA generator states are saved
and restored when the same number of GPUs is visible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnugen.folders.checkpoint_files import CheckpointError, load_nnunet_checkpoint, restore_rng_states, rng_states


def _checkpoint(path, states: dict) -> None:
    torch.save({"network_weights": {"w": torch.zeros(2)}, "nnugen_rng": states}, path)


def test_rng_state_of_a_checkpoint_loaded_for_another_device_restores(tmp_path):
    torch.manual_seed(3)
    np.random.seed(3)
    path = tmp_path / "checkpoint_latest.pth"
    _checkpoint(path, rng_states())
    expected = torch.rand(4), np.random.rand(2)
    torch.manual_seed(99)
    np.random.seed(99)
    checkpoint = load_nnunet_checkpoint(str(path), torch.device("meta"))
    assert checkpoint["nnugen_rng"]["torch"].device.type == "cpu"
    restore_rng_states(checkpoint["nnugen_rng"])
    assert torch.equal(torch.rand(4), expected[0])
    assert np.array_equal(np.random.rand(2), expected[1])


def test_a_state_without_data_is_one_clear_error():
    states = {"torch": torch.empty(5056, dtype=torch.uint8, device="meta"), "numpy": np.random.get_state()}
    with pytest.raises(CheckpointError, match="map_location='cpu'"):
        restore_rng_states(states)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the path of a machine without the saving run's GPUs")
def test_cuda_states_without_those_gpus_start_afresh_with_a_note():
    torch.manual_seed(5)
    states = {**rng_states(), "cuda": [torch.zeros(16, dtype=torch.uint8)] * 2}
    expected = torch.rand(3)
    notes: list[str] = []
    restore_rng_states(states, notes.append)
    assert torch.equal(torch.rand(3), expected), "the CPU state must be restored all the same"
    assert len(notes) == 1 and "2 GPU(s)" in notes[0]
