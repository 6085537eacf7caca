"""The reliability hooks of nnugen's trainers, on a real trainer built in-process on a preprocessed phantom
dataset: non-finite losses are skipped and then stop the run, non-finite weights are never saved, checkpoints are
atomic and a broken one is reported in one line, the NaN-proof EMA pseudo Dice, and seeded repeatability."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from e2e_helpers import nnunet_environment, planned_copy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def planned3d(tiny3d, tmp_path_factory) -> Path:
    """A copy of dataset 901 planned by nnugen_plan once for this module; each test works on a copy of it."""
    root = tmp_path_factory.mktemp("reliability3d")
    planned_copy(tiny3d, root, 901, ("segmentation.training.max_nonfinite_steps=3",))
    return root


@pytest.fixture()
def trainer_factory(planned3d, fresh_results, monkeypatch):
    root = fresh_results(planned3d)
    env = nnunet_environment(root)
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, env[key])
    folder = root / "preprocessed" / "Dataset901_Tiny3D"

    def make(trainer_class=None):
        from nnugen.trainers.nnugen_diffseg_trainer import NnugenDiffSegTrainer

        plans = json.loads((folder / "nnugenPlans.json").read_text())
        plans["continue_training"] = False
        dataset_json = json.loads((folder / "dataset.json").read_text())
        trainer = (trainer_class or NnugenDiffSegTrainer)(plans=plans, configuration="3d_fullres", fold=0,
                                                           dataset_json=dataset_json, device=torch.device("cpu"))
        trainer.initialize()
        return trainer

    return make


def _batch(nan: bool = False) -> dict:
    generator = torch.Generator().manual_seed(0)
    data = torch.randn(2, 1, 32, 32, 32, generator=generator)
    if nan:
        data[0, 0, 0, 0, 0] = float("nan")
    return {"data": data, "target": torch.randint(0, 3, (2, 1, 32, 32, 32), generator=generator).float()}


def _weights(trainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.network.state_dict().items()}


def test_nonfinite_loss_is_skipped_then_stops_the_run(trainer_factory):
    from nnugen.trainers.nonfinite_guard import NonFiniteLossError

    trainer = trainer_factory()
    before = _weights(trainer)
    result = trainer.train_step(_batch(nan=True))
    assert np.isnan(result["loss"])
    assert all(torch.equal(before[k], v) for k, v in trainer.network.state_dict().items()), "a NaN step changed weights"
    finite = trainer.train_step(_batch())
    assert np.isfinite(finite["loss"]) and trainer.nonfinite.consecutive == 0
    trainer.train_step(_batch(nan=True))
    trainer.train_step(_batch(nan=True))
    with pytest.raises(NonFiniteLossError, match="learning rate"):
        trainer.train_step(_batch(nan=True))


def test_nonfinite_gradient_without_a_grad_scaler_is_skipped(trainer_factory):
    # bf16 and fp32 have no GradScaler to skip an inf gradient: before, clipping turned it into NaN weights
    trainer = trainer_factory()
    assert trainer.grad_scaler is None
    before = _weights(trainer)
    parameter = next(trainer.network.parameters())
    hook = parameter.register_hook(lambda grad: grad * float("inf"))
    result = trainer.train_step(_batch())
    assert np.isfinite(result["loss"]), "the loss itself was finite"
    assert all(torch.equal(before[k], v) for k, v in trainer.network.state_dict().items()), "an inf gradient stepped"
    assert trainer.nonfinite.total == 1 and trainer.nonfinite.consecutive == 1
    hook.remove()
    trainer.train_step(_batch())
    assert trainer.nonfinite.consecutive == 0
    assert any(not torch.equal(before[k], v) for k, v in trainer.network.state_dict().items())


def test_nonfinite_weights_are_never_saved_and_checkpoints_are_atomic(trainer_factory, tmp_path):
    trainer = trainer_factory()
    folder = tmp_path / "fold"
    folder.mkdir()
    good = folder / "checkpoint_latest.pth"
    trainer.save_checkpoint(str(good))
    assert good.is_file() and [p.name for p in folder.iterdir()] == [good.name]
    content = good.read_bytes()
    with torch.no_grad():
        next(trainer.network.parameters()).view(-1)[0] = float("nan")
    trainer.save_checkpoint(str(good))
    assert good.read_bytes() == content, "a checkpoint with NaN weights replaced the good one"


def test_training_that_ends_with_nan_weights_fails_and_keeps_the_latest_checkpoint(trainer_factory):
    # before: nnU-Net's on_train_end failed to write checkpoint_final (non-finite weights), deleted
    # checkpoint_latest, and the run went on to validate and exit 0
    from pathlib import Path

    from nnugen.trainers.nonfinite_guard import NonFiniteLossError

    trainer = trainer_factory()
    latest = Path(trainer.output_folder) / "checkpoint_latest.pth"
    trainer.save_checkpoint(str(latest))
    with torch.no_grad():
        next(trainer.network.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="no checkpoint_final.pth is written"):
        trainer.on_train_end()
    assert latest.is_file() and not (Path(trainer.output_folder) / "checkpoint_final.pth").exists()


def test_broken_checkpoint_gives_one_line_error(trainer_factory, tmp_path):
    from nnugen.folders.checkpoint_files import CheckpointError

    trainer = trainer_factory()
    broken = tmp_path / "checkpoint_final.pth"
    trainer.save_checkpoint(str(broken))
    broken.write_bytes(broken.read_bytes()[: 2000])  # what an in-place write killed half-way leaves
    with pytest.raises(CheckpointError, match="checkpoint_final.pth does not load") as error:
        trainer.load_checkpoint(str(broken))
    assert "\n" not in str(error.value)


def test_checkpoint_round_trip_restores_weights_epoch_and_rng(trainer_factory, tmp_path):
    trainer = trainer_factory()
    trainer.train_step(_batch())
    trainer.current_epoch = 3
    path = tmp_path / "checkpoint_latest.pth"
    trainer.save_checkpoint(str(path))
    expected_random = torch.rand(3)
    restored = trainer_factory()
    # the meta device stands in for CUDA: a checkpoint mapped onto the training device held its RNG state there, which
    # torch.set_rng_state refuses (a TypeError traceback on every --c and --val on a GPU)
    restored.device = torch.device("meta")
    restored.load_checkpoint(str(path))
    assert restored.current_epoch == 4
    assert all(torch.equal(v, trainer.network.state_dict()[k]) for k, v in restored.network.state_dict().items())
    assert torch.equal(torch.rand(3), expected_random), "the RNG state was not restored"


def test_ema_pseudo_dice_survives_a_nan_epoch(trainer_factory):
    trainer = trainer_factory()
    logger = trainer.logger
    for epoch, dice in enumerate([0.5, float("nan"), 0.7]):
        trainer.current_epoch = epoch
        tp, fp, fn = (np.array([[5.0, 5.0]]), np.array([[5.0, 5.0]]), np.array([[0.0, 0.0]])) if dice == dice else \
            (np.array([[0.0, 0.0]]), np.array([[0.0, 0.0]]), np.array([[0.0, 0.0]]))
        trainer.on_validation_epoch_end([{"loss": np.array(1.0), "tp_hard": tp[0], "fp_hard": fp[0],
                                          "fn_hard": fn[0]}])
    ema = logger.get_value("ema_fg_dice", step=None)
    assert all(np.isfinite(ema)), ema


def test_seeded_training_steps_are_repeatable(trainer_factory, monkeypatch):
    monkeypatch.setenv("NNUGEN_SEED", "7")
    first = trainer_factory()
    first.train_step(_batch())
    second = trainer_factory()
    second.train_step(_batch())
    for key, value in first.network.state_dict().items():
        assert torch.equal(value, second.network.state_dict()[key]), key
