"""``NnugenBaselineTrainer``: nnU-Net's default trainer and network, with the run's length, batch and memory plan
from the ``baseline`` task of the nnugen section. It is the yardstick diffusion segmentation is measured against on
the same plan and budget."""

from nnugen.trainers.nnugen_trainer import NnugenTrainer


class NnugenBaselineTrainer(NnugenTrainer):
    nnugen_task = "baseline"
