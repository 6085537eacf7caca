"""The label adapter as its own trainer, so that its model folder is not the base DDPM's: NnugenDDPMTrainer in mode
``label_adapter`` (Mou et al. 2023), on the frozen image-only DDPM that ``ddpm.generation.base_model`` names (by
default this dataset's NnugenDDPMTrainer of the same configuration and fold)."""

from nnugen.tasks import TASKS
from nnugen.trainers.nnugen_ddpm_trainer import NnugenDDPMTrainer


class NnugenDDPMTrainer_labelAdapter(NnugenDDPMTrainer):
    settings_changes = TASKS["adapter"].settings_changes  # the task table's row (nnugen/tasks.py)
