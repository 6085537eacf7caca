"""An epoch the training log announces as finished ("Epoch time") is already on disk: nnugen's trainers write the
epoch's checkpoints before that line (nnU-Net prints it first), checkpoint_latest after the last epoch too;
the next run deletes the temporaries of checkpoint writes a kill interrupted; ``--c`` picks its checkpoint as nnU-Net
does and refuses a broken one before loading it."""

from __future__ import annotations

import os

import pytest
from nnunetv2.training.logging.nnunet_logger import MetaLogger

from nnugen.atomic_files import atomic_write_text, torn_writes
from nnugen.folders.checkpoint_files import remove_torn_writes
from nnugen.trainers.epoch_metrics import EpochMetrics
from nnugen.trainers.nnugen_trainer import NnugenTrainer
from nnugen.trainers.progress_report import ProgressReport
from nnugen.trainers.training_progress import TrainingProgress, read_training_progress


def _trainer(tmp_path, num_epochs: int, save_every: int) -> tuple[NnugenTrainer, list[str]]:
    """Only what ``on_epoch_end`` reads; saving and printing are recorded in order in ``events``."""
    events: list[str] = []
    trainer = NnugenTrainer.__new__(NnugenTrainer)
    trainer.output_folder = str(tmp_path)
    trainer.logger = MetaLogger(str(tmp_path), resume=False)
    trainer.logger.loggers = []  # no W&B, whatever the environment says
    trainer.local_rank, trainer.current_epoch, trainer._best_ema = 0, 0, None
    trainer.num_epochs, trainer.save_every, trainer._metrics = num_epochs, save_every, EpochMetrics()
    trainer.keep_epochs = ()
    trainer.progress_report = ProgressReport(str(tmp_path))
    trainer.progress_report.loss = 0.25
    trainer.num_iterations_per_epoch = 4
    trainer.save_checkpoint = lambda filename: events.append(f"save {os.path.basename(filename)}")
    trainer.print_to_log_file = lambda *args, **kwargs: events.append(" ".join(str(a) for a in args))
    return trainer, events


def _end_epoch(trainer: NnugenTrainer, dice: float) -> None:
    epoch, log = trainer.current_epoch, trainer.logger.log
    for key, value in (("epoch_start_timestamps", 0.0), ("lrs", 0.01), ("train_losses", 1.0), ("val_losses", 1.0),
                       ("dice_per_class_or_region", [dice]), ("mean_fg_dice", dice)):
        log(key, value, epoch)
    trainer.on_epoch_end()


@pytest.mark.parametrize("save_every", [1, 2])
def test_checkpoints_are_written_before_the_epoch_is_announced(tmp_path, save_every):
    trainer, events = _trainer(tmp_path, num_epochs=3, save_every=save_every)
    announced_with_latest = []
    for epoch, dice in enumerate([0.5, 0.4, 0.6]):
        start = len(events)
        _end_epoch(trainer, dice)
        epoch_events = events[start:]
        announced = next(i for i, event in enumerate(epoch_events) if event.startswith("Epoch time"))
        saved = [event for event in epoch_events[:announced] if event.startswith("save")]
        assert all(not event.startswith("save") for event in epoch_events[announced:]), epoch_events
        if epoch != 1:  # epochs 0 and 2 raise the EMA pseudo Dice: checkpoint_best first, then latest
            assert saved[0] == "save checkpoint_best.pth", epoch_events
        announced_with_latest.append("save checkpoint_latest.pth" in saved)
        assert trainer.current_epoch == epoch + 1
    # every save_every epochs, and always after the last one (nnU-Net skips it there: the gap before final)
    assert announced_with_latest == ([True, True, True] if save_every == 1 else [False, True, True])
    assert (tmp_path / "progress.png").is_file()
    # where a watcher sees the run: all 3 epochs done (epoch 3 of 3 is one past the last, step 0)
    assert read_training_progress(tmp_path) == TrainingProgress(3, 3, 0, 4, 0.25, False)


def test_only_the_temporaries_of_interrupted_checkpoint_writes_are_removed(tmp_path):
    latest = tmp_path / "checkpoint_latest.pth"
    atomic_write_text(latest, "whole")
    torn = [tmp_path / ".checkpoint_latest.pth.0a1b2c3d.tmp", tmp_path / ".checkpoint_best.pth.99887766.tmp"]
    for path in torn:
        path.write_bytes(b"half a checkpoint")
    other = tmp_path / ".summary.json.12345678.tmp"
    other.write_text("{")
    assert torn_writes(latest) == [torn[0]]
    assert sorted(remove_torn_writes(str(tmp_path))) == sorted(path.name for path in torn)
    assert not any(path.exists() for path in torn)
    assert latest.read_text() == "whole" and other.exists()


def test_resume_checkpoint_is_picked_as_nnunet_picks_it_and_a_broken_one_is_refused_without_unpickling(tmp_path):
    import torch

    from nnugen.folders.checkpoint_files import CheckpointError, check_checkpoint_file, resume_checkpoint

    assert resume_checkpoint(str(tmp_path)) is None
    for name in ("checkpoint_best.pth", "checkpoint_latest.pth"):
        torch.save({"current_epoch": 3}, tmp_path / name)
    assert resume_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint_latest.pth")
    check_checkpoint_file(str(tmp_path / "checkpoint_latest.pth"))
    final = tmp_path / "checkpoint_final.pth"
    final.write_bytes((tmp_path / "checkpoint_latest.pth").read_bytes()[:-100])  # a copy cut off by a full disk
    assert resume_checkpoint(str(tmp_path)) == str(final)
    with pytest.raises(CheckpointError, match="checkpoint_final.pth does not load .*delete it and resume with --c"):
        check_checkpoint_file(str(final))


def test_resume_with_another_number_of_processes_is_refused(tmp_path):
    import torch

    from nnugen.folders.checkpoint_files import CheckpointError, check_resume_world_size

    two_ranks, older = tmp_path / "checkpoint_latest.pth", tmp_path / "checkpoint_older.pth"
    torch.save({"network_weights": {}, "current_epoch": 3, "nnugen_world_size": 2}, two_ranks)
    torch.save({"network_weights": {}, "current_epoch": 3}, older)
    check_resume_world_size(str(two_ranks), 2)
    with pytest.raises(CheckpointError, match=r"trained by 2 process\(es\) and this run has 1; resume it with 2 "):
        check_resume_world_size(str(two_ranks), 1)
    with pytest.raises(CheckpointError, match="and this run has 4"):
        check_resume_world_size(str(two_ranks), 4)
    check_resume_world_size(str(older), 4)  # written before the number was recorded: not checked
