"""``CheckpointHooks``: nnU-Net's checkpoint hooks for every nnugen trainer.

Rank 0 writes checkpoints atomically and never with non-finite weights (checkpoint_files.py), with the task's extra
state (EMA weights, a discriminator ...) beside nnU-Net's; a checkpoint that does not load is reported in one line
naming the fix, instead of nnU-Net's traceback.
"""

from __future__ import annotations

from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnugen.folders.checkpoint_files import (
    CheckpointError,
    load_nnunet_checkpoint,
    restore_nnunet_checkpoint,
    save_nnunet_checkpoint,
)


class CheckpointHooks(nnUNetTrainer):
    def save_checkpoint(self, filename: str) -> None:
        if self.local_rank == 0 and self.disable_checkpointing:
            self.print_to_log_file("No checkpoint written, checkpointing is disabled")
        elif self.local_rank == 0:
            save_nnunet_checkpoint(self, filename)

    def extra_checkpoint_state(self) -> dict:
        """Further entries for the checkpoint (EMA weights, a discriminator ...); restored in ``load_checkpoint``."""
        return {}

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        if not self.was_initialized:
            self.initialize()
        checkpoint = filename_or_checkpoint
        if isinstance(checkpoint, str):
            checkpoint = load_nnunet_checkpoint(checkpoint, self.device)
        try:
            restore_nnunet_checkpoint(self, checkpoint)
        except (KeyError, RuntimeError, TypeError, ValueError) as error:
            raise CheckpointError(f"the checkpoint does not fit this trainer or plan ({str(error).splitlines()[0]}); "
                                  "train again or pick the matching -tr / -p / configuration") from None
        self.restore_extra_checkpoint_state(checkpoint)

    def restore_extra_checkpoint_state(self, checkpoint: dict) -> None:
        """Counterpart of ``extra_checkpoint_state``."""
