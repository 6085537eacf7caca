"""``nnugen_train ID FOLD CONFIG [--task ...]``: nnU-Net's training run with ``-p PLANS`` and the task's trainer.
Under ``torchrun`` each process runs one rank (``torchrun ... $(which nnugen_train) ID FOLD CONFIG -device cpu``)."""

from __future__ import annotations

import argparse

from nnugen.entrypoints.cli_errors import run_reporting_errors
from nnugen.entrypoints.deprecated_flags import add_plans_and_progress


def build_parser() -> argparse.ArgumentParser:
    from nnugen import PLANS_IDENTIFIER
    from nnugen.tasks import CONFIGURATIONS, TASKS

    parser = argparse.ArgumentParser(
        prog="nnugen_train",
        description="Train one fold with nnU-Net's own training run, -p PLANS (nnugenPlans) and the task's trainer "
                    "(results in nnUNet_results/DatasetX/<Trainer>__<PLANS>__<CONFIG>/fold_F).")
    parser.add_argument("dataset", help="dataset ID or name")
    parser.add_argument("fold", help="fold of nnU-Net's 5-fold split (0-4) or 'all'")
    parser.add_argument("configuration", choices=CONFIGURATIONS, help="2d, 3d (= 3d_fullres), 3d_fullres, 3d_lowres")
    parser.add_argument("--task", default="seg", choices=list(TASKS),
                        help="seg (diffusion segmentation, default), ddpm, adapter (label adapter on a trained ddpm), "
                             "autoencoder, ldm, anomaly, anomaly_adapter (anatomy-mask adapter on a trained anomaly "
                             "model), baseline (nnU-Net's trainer with the same plan and budget)")
    parser.add_argument("-device", default="cuda", help="cuda (default), cpu or mps")
    parser.add_argument("--c", action="store_true", help="continue from the latest checkpoint")
    add_plans_and_progress(parser, PLANS_IDENTIFIER, "show the progress bar (epoch, step, smoothed loss, ETA) also "
                           "when stdout is not a terminal; by default it shows in a terminal only, on rank 0")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    parser.set_defaults(progress=None)  # neither flag: a bar when stdout is a terminal (run_flags.progress_wanted)
    parser.add_argument("-num_gpus", type=int, default=1, help="GPUs on this node (nnU-Net's DDP); under torchrun, "
                        "use --nproc_per_node instead")
    parser.add_argument("--seed", type=int, default=None, help="make the run repeatable (CPU) with this seed, "
                        "augmentation workers included")
    parser.add_argument("--val", action="store_true", help="only run the final validation of a finished training")
    parser.add_argument("--npz", action="store_true", help="save softmax probabilities of the final validation")
    parser.add_argument("-pretrained_weights", default=None, metavar="CHECKPOINT",
                        help="start from a trained nnU-Net (nnU-Net's flag): e.g. .../nnUNetTrainer__nnUNetPlans__"
                             "3d_fullres/fold_0/checkpoint_final.pth of the same architecture; --task seg maps it into "
                             "the denoiser (new inputs and time modulation start at zero), --task baseline loads it")
    parser.add_argument("--partition", type=int, nargs="+", default=None, metavar="PIECES",
                        help="under torchrun: split each patch into this many blocks per spatial axis (their "
                             "product the number of processes), one block per process, e.g. --partition 1 1 2; --task "
                             "baseline, seg or ddpm; default: the plan's memory.partition (none unless batch 1 does "
                             "not fit the GPU budget); needs pip install 'nnugen[partition]' (docs/scaling.md)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from nnugen.run.train_api import TrainRequest, train

        train(TrainRequest(dataset=args.dataset, fold=args.fold, configuration=args.configuration, task=args.task,
                           device=args.device, continue_training=args.c, num_gpus=args.num_gpus, seed=args.seed,
                           progress=args.progress, plans=args.plans, only_validation=args.val,
                           save_probabilities=args.npz, pretrained_weights=args.pretrained_weights,
                           partition=tuple(args.partition) if args.partition else None))
        return 0

    from nnugen.folders.checkpoint_files import CheckpointError
    from nnugen.trainers.nonfinite_guard import NonFiniteLossError

    return run_reporting_errors("nnugen_train", body, (ValueError, OSError, CheckpointError, NonFiniteLossError))


if __name__ == "__main__":
    raise SystemExit(main())
