"""``nnugen_evaluate``: ``nnUNetv2_evaluate_folder`` (nnU-Net's ``summary.json``, unchanged) plus how well the
uncertainty images or probabilities beside the predictions find the wrongly labelled voxels (AUROC / AUPRC) and how
calibrated the probabilities are (ECE). The arguments are nnU-Net's (``gt_folder pred_folder -djfile -pfile -o -np
--chill``); ``-ref`` / ``-pred`` may name the two folders instead of the positional arguments."""

from __future__ import annotations

import argparse
import os


def _default_processes() -> int:
    try:
        return int(os.environ.get("nnUNet_def_n_proc") or 8)  # nnU-Net's default_num_processes
    except ValueError:
        return 8


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnugen_evaluate",
        description="Evaluate a folder of predicted segmentations against reference segmentations: nnU-Net's "
                    "summary.json (Dice, IoU, TP/FP/FN per label), and, where CASE_entropy / CASE_variance images "
                    "(nnugen_predict --save-uncertainty) or CASE.npz probabilities (--save_probabilities) lie beside "
                    "the predictions, AUROC / AUPRC of the uncertainty for the wrong voxels and the expected "
                    "calibration error (uncertainty_summary.json). Prints a short table.")
    parser.add_argument("gt_folder", nargs="?", default=None, help="folder with reference segmentations (or -ref)")
    parser.add_argument("pred_folder", nargs="?", default=None, help="folder with predicted segmentations (or -pred)")
    parser.add_argument("-ref", default=None, help="folder with reference segmentations, e.g. labelsTr")
    parser.add_argument("-pred", default=None, help="folder with predicted segmentations")
    parser.add_argument("-djfile", default=None, help="dataset.json (default: PRED/dataset.json, which "
                                                      "nnUNetv2_predict and nnugen_predict write)")
    parser.add_argument("-pfile", default=None, help="plans.json, for its label manager (default: PRED/plans.json if "
                                                     "there, else the labels of dataset.json)")
    parser.add_argument("-fe", default=None, help="file ending, e.g. .nii.gz (default: dataset.json's)")
    parser.add_argument("-o", default=None, help="nnU-Net's summary file (default PRED/summary.json); the uncertainty "
                                                 "evaluation goes beside it as uncertainty_<name>.json")
    parser.add_argument("-np", "--np", dest="np", type=int, default=_default_processes(),
                        help="processes (default $nnUNet_def_n_proc, else 8)")
    parser.add_argument("--chill", action="store_true", help="do not fail when references lack a prediction")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pooled voxel sample (default 0)")
    parser.add_argument("--pooled-voxels", type=int, default=None, metavar="N",
                        help="most voxels of the pooled AUROC / AUPRC; above it a seeded uniform sample "
                             "(default 10,000,000)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.gt_folder or args.pred_folder) and (args.ref or args.pred):
        parser.error("give the folders either as gt_folder pred_folder or as -ref / -pred, not both")
    reference, prediction = args.ref or args.gt_folder, args.pred or args.pred_folder
    if reference is None or prediction is None:
        parser.error("the reference and the prediction folder are required (gt_folder pred_folder, or -ref / -pred)")
    from nnugen.entrypoints.cli_errors import run_reporting_errors

    def body() -> int:
        import json
        from pathlib import Path

        from nnugen.evaluation.error_detection import POOLED_VOXELS
        from nnugen.evaluation.segmentation_evaluation import (
            evaluate_segmentation_folder,
            summary_table,
            write_folder_evaluation,
        )

        if args.np < 1:
            raise ValueError(f"-np must be >= 1, got {args.np}")
        if args.pooled_voxels is not None and args.pooled_voxels < 1:
            raise ValueError(f"--pooled-voxels must be >= 1, got {args.pooled_voxels}")
        pred = Path(prediction)
        if not pred.is_dir():
            raise ValueError(f"prediction folder {pred} does not exist; pass an existing folder")
        dataset_file = Path(args.djfile) if args.djfile else pred / "dataset.json"
        if not dataset_file.is_file():
            raise ValueError(f"{dataset_file} not found; pass the dataset's dataset.json with -djfile")
        dataset_json = json.loads(dataset_file.read_text(encoding="utf-8"))
        plans_file = args.pfile or (str(pred / "plans.json") if (pred / "plans.json").is_file() else None)
        if plans_file is not None and not Path(plans_file).is_file():
            raise ValueError(f"plans file {plans_file} not found; pass an existing plans.json with -pfile")
        summary_file = Path(args.o) if args.o else pred / "summary.json"
        if summary_file.suffix != ".json":
            raise ValueError(f"-o must end with .json, got {summary_file}")
        evaluation = evaluate_segmentation_folder(
            reference, pred, dataset_json, args.fe, plans_file, args.np, args.chill,
            args.pooled_voxels or POOLED_VOXELS, args.seed)
        uncertainty_file = summary_file.with_name(f"uncertainty_{summary_file.name}")
        write_folder_evaluation(evaluation, summary_file, uncertainty_file)
        print(summary_table(evaluation))
        print(f"nnugen_evaluate: wrote {summary_file} and {uncertainty_file}")
        return 0

    return run_reporting_errors("nnugen_evaluate", body, (ValueError, OSError))


if __name__ == "__main__":
    raise SystemExit(main())
