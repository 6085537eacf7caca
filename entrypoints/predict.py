"""``nnugen_predict``: ``nnUNetv2_predict`` for diffusion segmentation and anomaly models, plus the sampler's settings,
a seed, uncertainty maps, and an anomaly model's maps and counterfactuals. The arguments are nnU-Net's
(``-i -o -d -p -tr -c -f ...``); ``-m MODEL_FOLDER`` replaces ``-d/-tr/-p/-c`` as in
``nnUNetv2_predict_from_modelfolder``."""

from __future__ import annotations

import argparse
import os

from nnugen.entrypoints.cli_errors import run_reporting_errors
from nnugen.entrypoints.deprecated_flags import PLANS_HELP, add_old_spelling


def _default(variable: str, default: int) -> int:
    try:
        return int(os.environ.get(variable) or default)
    except ValueError:
        return default


def build_parser() -> argparse.ArgumentParser:
    from nnugen import PLANS_IDENTIFIER
    from nnugen.tasks import TASKS

    parser = argparse.ArgumentParser(
        prog="nnugen_predict",
        description="Segment the images of a folder with a trained diffusion segmentation model through nnU-Net's "
                    "predictor: an ensemble of --ensemble-size sampled segmentations per case, averaged; optionally "
                    "the uncertainty maps CASE_entropy and CASE_variance in the image's geometry. With an anomaly "
                    "model (-tr NnugenAnomalyTrainer): the lesion segmentation, CASE_anomaly, CASE_counterfactual and, "
                    "with --ensemble-size above 1, CASE_anomaly_variance.")
    parser.add_argument("-i", required=True, help="input folder of CASE_XXXX<file_ending> images (nnU-Net's layout)")
    parser.add_argument("-o", required=True, help="output folder (created if needed)")
    parser.add_argument("-d", default=None, help="dataset ID or name (with -tr / -p / -c)")
    parser.add_argument("-p", default=PLANS_IDENTIFIER, help=PLANS_HELP.format(default=PLANS_IDENTIFIER))
    trainer = TASKS["seg"].trainer
    parser.add_argument("-tr", default=trainer, help=f"trainer (default {trainer})")
    parser.add_argument("-c", default=None, help="configuration: 2d, 3d_fullres (or 3d), 3d_lowres ...")
    parser.add_argument("-m", default=None, help="model folder (containing fold_X), instead of -d / -tr / -p / -c")
    parser.add_argument("-f", nargs="+", default=None,
                        help="folds to ensemble (default: every fold_X with the checkpoint)")
    parser.add_argument("-step_size", type=float, default=0.5, help="sliding window step, fraction of a patch")
    parser.add_argument("--disable_tta", action="store_true", help="no mirroring (diffusion models default to none)")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--save_probabilities", action="store_true", help="also write CASE.npz and CASE.pkl")
    parser.add_argument("--continue_prediction", "--continue", "--c", action="store_true",
                        help="skip cases whose output files all exist")
    parser.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint (default checkpoint_final.pth)")
    parser.add_argument("-npp", type=int, default=_default("nnUNet_npp", 3),
                        help="preprocessing processes (0: in this process)")
    parser.add_argument("-nps", type=int, default=_default("nnUNet_nps", 3), help="export processes (0: in this "
                                                                                  "process)")
    parser.add_argument("-prev_stage_predictions", default=None, help="previous stage's predictions (cascade)")
    parser.add_argument("-num_parts", type=int, default=1, help="split the cases into this many parts")
    parser.add_argument("-part_id", type=int, default=0, help="which part this run predicts (0 ... num_parts-1)")
    parser.add_argument("-device", default="cuda", help="cuda (default), cpu or mps")
    parser.add_argument("--disable_progress_bar", action="store_true")
    parser.add_argument("--not_on_device", action="store_true", help="keep the sliding window's arrays in CPU memory")
    parser.add_argument("--sampler", default=None, help="ddpm, ddim or dpm_solver++ (default: the model's plans)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's plans)")
    parser.add_argument("--ensemble-size", dest="seeds", type=int, default=None, metavar="N",
                        help="sampled segmentations per case, averaged; anomaly models: counterfactuals per strength "
                             "(default: the model's plans, sampler.seeds)")
    add_old_spelling(parser, "--seeds", "--ensemble-size", dest="seeds", type=int)
    parser.add_argument("--eta", type=float, default=None, help="DDIM eta in [0, 1] (default: the model's plans)")
    parser.add_argument("--spacing", default=None,
                        help="step grid: uniform, trailing or log-snr (default: the model's plans, sampler.spacing)")
    parser.add_argument("--shared-first-step", dest="shared_first_step", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="ensembles of ddpm (or ddim with eta > 0): the members start from one noise and share "
                             "the first network call, 1 + N x (steps - 1) passes instead of N x steps (default: the "
                             "model's plans, sampler.shared_first_step)")
    parser.add_argument("--seed", type=int, default=0,
                        help="base seed; each case samples with a seed derived from (seed, case name) (default 0)")
    parser.add_argument("--save-uncertainty", dest="save_uncertainty", action="store_true",
                        help="write CASE_entropy (of the mean probability, nats) and CASE_variance (across the "
                             "ensemble, mean over classes) as float32 images")
    parser.add_argument("--strengths", type=float, nargs="+", default=None,
                        help="anomaly models: noise strengths in (0, 1] of the counterfactuals (default: the plans' "
                             "anomaly.strengths)")
    parser.add_argument("--threshold-file", dest="threshold_file", default=None,
                        help="anomaly models: a threshold.json of this model and fold (one -f) to use instead of the "
                             "threshold stored in the checkpoint")
    parser.add_argument("--skip-input-check", dest="skip_input_check", action="store_true",
                        help="do not read the input images for NaN / Inf voxels and cut-off files before predicting "
                             "(the check nnugen_check runs; on by default)")
    parser.add_argument("--partition", nargs="+", type=int, default=None, metavar="PIECES",
                        help="under torchrun: cut the sliding-window tiles of every case into PIECES per axis of the "
                             "patch (e.g. 1 2 1; their product = --nproc_per_node x nodes), each process predicting "
                             "the tiles of one slab; rank 0 gathers the logits and writes the files one process "
                             "writes (1 1 1 in one process: the reference)")
    parser.add_argument("--partition-timeout", dest="partition_timeout", type=float, default=600.0,
                        metavar="SECONDS", help="--partition: how long a process waits for the others before it "
                                                "stops with an error (default 600)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from pathlib import Path

        from nnugen.inference.predict_api import PredictRequest, predict

        bad = [f for f in args.f or () if f != "all" and not f.isdigit()]
        if bad:
            raise ValueError(f"-f {' '.join(bad)}: folds are numbers (0 1 2 3 4) or 'all'")
        folds = None if args.f is None else tuple(f if f == "all" else int(f) for f in args.f)
        request = PredictRequest(
            input_folder=Path(args.i), output_folder=Path(args.o),
            model_folder=Path(args.m) if args.m else None, dataset=args.d, trainer=args.tr, plans=args.p,
            configuration=args.c, folds=folds, checkpoint=args.chk, step_size=args.step_size,
            mirroring=not args.disable_tta, verbose=args.verbose, save_probabilities=args.save_probabilities,
            continue_prediction=args.continue_prediction, num_processes_preprocessing=args.npp,
            num_processes_export=args.nps,
            previous_stage_predictions=Path(args.prev_stage_predictions) if args.prev_stage_predictions else None,
            num_parts=args.num_parts, part_id=args.part_id, device=args.device,
            progress_bar=not args.disable_progress_bar, on_device=not args.not_on_device, sampler=args.sampler,
            steps=args.steps, seeds=args.seeds, eta=args.eta, spacing=args.spacing,
            shared_first_step=args.shared_first_step, seed=args.seed,
            save_uncertainty=args.save_uncertainty,
            strengths=tuple(args.strengths) if args.strengths else None,
            threshold_file=Path(args.threshold_file) if args.threshold_file else None,
            check_inputs=not args.skip_input_check,
            partition=None if args.partition is None else tuple(args.partition),
            partition_timeout=args.partition_timeout)
        written = predict(request)
        if written or not request.partition:  # the other ranks of a partitioned run write nothing
            print(f"nnugen_predict: wrote {len(written)} file(s) to {args.o}")
        return 0

    return run_reporting_errors("nnugen_predict", body, (ValueError, OSError))


if __name__ == "__main__":
    raise SystemExit(main())
