"""The anatomy adapter as its own trainer, so that its model folder is not the base's: NnugenAnomalyTrainer with a
T2I-Adapter (Mou et al. 2023) on the one-hot of the anatomy mask (``anomaly.condition_channel``), trained on the frozen
denoiser that ``anomaly.generation.base_model`` names (by default this dataset's NnugenAnomalyTrainer of the same
configuration and fold). Image space only; no conditioning dropout or guidance: counterfactuals always see the mask."""

from nnugen.tasks import TASKS
from nnugen.trainers.nnugen_anomaly_trainer import NnugenAnomalyTrainer


class NnugenAnomalyTrainer_anatomyAdapter(NnugenAnomalyTrainer):
    settings_changes = TASKS["anomaly_adapter"].settings_changes  # the task table's row (nnugen/tasks.py)
