"""``nnugen_evaluate``, two modes (docs/evaluation.md):

- segmentations: ``nnUNetv2_evaluate_folder`` (nnU-Net's ``summary.json``, unchanged), HD95 / NSD per label
  (``distances_summary.json``), and how well the uncertainty images or probabilities beside the predictions find the
  wrongly labelled voxels (AUROC / AUPRC) and how calibrated the probabilities are (ECE). The arguments are nnU-Net's
  (``gt_folder pred_folder -djfile -pfile -o -np --chill``); ``-ref`` / ``-pred`` may name the two folders instead.
- generated images: ``--generated SYN [SYN ...] --real imagesTr``: MS-SSIM diversity of both sets, Fréchet distance
  and Gaussian MMD on the features of the dataset's trained nnU-Net (``-d -c -f``), PSNR / SSIM of
  ``--reconstructions`` (``generation_summary.json`` in each SYN). Several SYN folders (checkpoints, samplers, a
  control) are scored against one real set with one start-up and one loaded encoder; all are scored before any
  summary is written."""

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
                    "summary.json (Dice, IoU, TP/FP/FN per label), HD95 and normalised surface distance per label "
                    "(distances_summary.json), and, where CASE_entropy / CASE_variance images "
                    "(nnugen_predict --save-uncertainty) or CASE.npz probabilities (--save_probabilities) lie beside "
                    "the predictions, AUROC / AUPRC of the uncertainty for the wrong voxels and the expected "
                    "calibration error (uncertainty_summary.json). Or, with --generated and --real, a folder of "
                    "synthetic images against real ones (generation_summary.json). Prints a short table.")
    parser.add_argument("gt_folder", nargs="?", default=None, help="folder with reference segmentations (or -ref)")
    parser.add_argument("pred_folder", nargs="?", default=None, help="folder with predicted segmentations (or -pred)")
    parser.add_argument("-ref", default=None, help="folder with reference segmentations, e.g. labelsTr")
    parser.add_argument("-pred", default=None, help="folder with predicted segmentations")
    parser.add_argument("-djfile", default=None, help="dataset.json (default: PRED/dataset.json, which "
                                                      "nnUNetv2_predict and nnugen_predict write)")
    parser.add_argument("-pfile", default=None, help="plans.json, for its label manager (default: PRED/plans.json if "
                                                     "there, else the labels of dataset.json)")
    parser.add_argument("-fe", default=None, help="file ending, e.g. .nii.gz (default: dataset.json's)")
    parser.add_argument("-o", default=None, help="output JSON: nnU-Net's summary file (default PRED/summary.json; the "
                                                 "distances and uncertainty go beside it as distances_<name>.json and "
                                                 "uncertainty_<name>.json), or with --generated the generation "
                                                 "summary (default SYN/generation_summary.json)")
    parser.add_argument("-np", "--np", dest="np", type=int, default=_default_processes(),
                        help="processes (default $nnUNet_def_n_proc, else 8)")
    parser.add_argument("--chill", action="store_true", help="do not fail when references lack a prediction")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pooled voxel sample (default 0)")
    parser.add_argument("--pooled-voxels", type=int, default=None, metavar="N",
                        help="most voxels of the pooled AUROC / AUPRC; above it a seeded uniform sample "
                             "(default 10,000,000)")
    parser.add_argument("--nsd-tolerance", type=float, default=None, metavar="MM",
                        help="tolerance of the normalised surface distance in mm (default 1)")
    generation = parser.add_argument_group("generated images (instead of the segmentation folders)")
    generation.add_argument("--generated", default=None, nargs="+", metavar="SYN",
                            help="folder of synthetic images, CASE_0000<ending> per channel (nnugen_sample's output "
                                 "folder or its imagesTr); several folders are each scored against --real, each "
                                 "summary in its own folder")
    generation.add_argument("--real", default=None, metavar="REAL", help="folder of real images, e.g. imagesTr")
    generation.add_argument("--reconstructions", default=None, metavar="REC",
                            help="folder of reconstructions of real cases, named as the real ones: PSNR / SSIM")
    generation.add_argument("-d", default=None, help="dataset name or ID whose trained nnU-Net (nnUNet_results) "
                                                     "gives the features of the Frechet distance and MMD")
    generation.add_argument("-c", default="3d_fullres", help="configuration of that model (default 3d_fullres)")
    generation.add_argument("-f", default="0", help="fold of that model (default 0; 'all' allowed)")
    generation.add_argument("-device", default="cpu", help="device of the feature encoder (default cpu)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.generated or args.real:
        if args.gt_folder or args.pred_folder or args.ref or args.pred:
            parser.error("give either segmentation folders (gt_folder pred_folder / -ref -pred) or --generated and "
                         "--real, not both")
        if not (args.generated and args.real):
            parser.error("--generated and --real go together: the synthetic and the real images")
        return _evaluate_generation(args)
    if args.reconstructions or args.d:
        parser.error("--reconstructions and -d belong to --generated / --real")
    if (args.gt_folder or args.pred_folder) and (args.ref or args.pred):
        parser.error("give the folders either as gt_folder pred_folder or as -ref / -pred, not both")
    reference, prediction = args.ref or args.gt_folder, args.pred or args.pred_folder
    if reference is None or prediction is None:
        parser.error("the reference and the prediction folder are required (gt_folder pred_folder, or -ref / -pred)")
    from nnugen.entrypoints.cli_errors import run_reporting_errors

    def body() -> int:
        from pathlib import Path

        from nnugen.evaluation.error_detection import POOLED_VOXELS
        from nnugen.evaluation.segmentation_evaluation import (
            evaluate_segmentation_folder,
            summary_table,
            write_folder_evaluation,
        )
        from nnugen.folders.dataset_folders import load_json

        if args.np < 1:
            raise ValueError(f"-np must be >= 1, got {args.np}")
        if args.pooled_voxels is not None and args.pooled_voxels < 1:
            raise ValueError(f"--pooled-voxels must be >= 1, got {args.pooled_voxels}")
        tolerance = _nsd_tolerance(args)
        pred = Path(prediction)
        if not pred.is_dir():
            raise ValueError(f"prediction folder {pred} does not exist; pass an existing folder")
        dataset_file = Path(args.djfile) if args.djfile else pred / "dataset.json"
        if not dataset_file.is_file():
            raise ValueError(f"{dataset_file} not found; pass the dataset's dataset.json with -djfile")
        dataset_json = load_json(dataset_file)  # not JSON: a malformed file, exit 2
        plans_file = args.pfile or (str(pred / "plans.json") if (pred / "plans.json").is_file() else None)
        if plans_file is not None and not Path(plans_file).is_file():
            raise ValueError(f"plans file {plans_file} not found; pass an existing plans.json with -pfile")
        summary_file = Path(args.o) if args.o else pred / "summary.json"
        if summary_file.suffix != ".json":
            raise ValueError(f"-o must end with .json, got {summary_file}")
        evaluation = evaluate_segmentation_folder(
            reference, pred, dataset_json, args.fe, plans_file, args.np, args.chill,
            args.pooled_voxels or POOLED_VOXELS, args.seed, tolerance)
        uncertainty_file = summary_file.with_name(f"uncertainty_{summary_file.name}")
        distances_file = summary_file.with_name(f"distances_{summary_file.name}")
        write_folder_evaluation(evaluation, summary_file, uncertainty_file, distances_file)
        print(summary_table(evaluation))
        print(f"nnugen_evaluate: wrote {summary_file}, {distances_file} and {uncertainty_file}")
        return 0

    return run_reporting_errors("nnugen_evaluate", body, (ValueError, OSError))


def _nsd_tolerance(args) -> float:
    from nnugen.evaluation.surface_distances import NSD_TOLERANCE_MM

    if args.nsd_tolerance is None:
        return NSD_TOLERANCE_MM
    if not args.nsd_tolerance > 0:
        raise ValueError(f"--nsd-tolerance must be > 0 mm, got {args.nsd_tolerance}")
    return args.nsd_tolerance


def _generation_dataset_json(args) -> dict:
    """-djfile, else the dataset's raw dataset.json (-d), else REAL/../dataset.json, REAL/ or SYN/dataset.json."""
    from pathlib import Path

    from nnugen.folders.dataset_folders import load_json, raw_folder

    candidates = [Path(args.djfile)] if args.djfile else []
    if not candidates:
        raw = raw_folder(args.d) if args.d else None
        candidates = ([raw / "dataset.json"] if raw else []) + [
            Path(args.real).parent / "dataset.json", Path(args.real) / "dataset.json",
            Path(args.generated[0]) / "dataset.json"]
    for path in candidates:
        if path.is_file():
            return load_json(path)  # not JSON: a malformed file, exit 2
    raise ValueError(f"{candidates[0]} not found; pass the dataset's dataset.json with -djfile")


def _evaluate_generation(args) -> int:
    from nnugen.entrypoints.cli_errors import run_reporting_errors

    def body() -> int:
        from pathlib import Path

        from nnugen.atomic_files import atomic_write_json
        from nnugen.evaluation.generation_evaluation import encoder_features, evaluate_generation, generation_table

        if args.o and len(args.generated) > 1:
            raise ValueError("-o names one summary; with several --generated folders each summary goes into its "
                             "folder (leave -o out)")
        outputs = [Path(args.o) if args.o else Path(g) / "generation_summary.json" for g in args.generated]
        if outputs[0].suffix != ".json":
            raise ValueError(f"-o must end with .json, got {outputs[0]}")
        if len(set(outputs)) < len(outputs):
            raise ValueError("a --generated folder is named twice; name each folder once")
        dataset_json = _generation_dataset_json(args)
        features, note = None, "no trained nnU-Net given (-d DATASET -c CONFIGURATION -f FOLD)"
        if args.d:
            from nnugen.evaluation.encoder_features import EncoderFeatures
            from nnugen.folders.dataset_folders import dataset_name
            from nnugen.folders.model_folder import results_root

            encoder = EncoderFeatures.of_dataset(results_root(), dataset_name(args.d), args.c, args.f, args.device)
            features, note = encoder_features(encoder, args.c), f"encoder of {encoder.fold_folder}"
        reconstructions = Path(args.reconstructions) if args.reconstructions else None
        memo: dict = {}  # the real set's MS-SSIM, computed once for every --generated folder
        results = [evaluate_generation(Path(g), Path(args.real), dataset_json, args.fe, features, note, reconstructions,
                                       memo) for g in args.generated]
        for output, result in zip(outputs, results):
            output.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(output, result)
            if len(results) > 1:
                print(result["generated_folder"])
            print(generation_table(result))
            print(f"nnugen_evaluate: wrote {output}")
        return 0

    return run_reporting_errors("nnugen_evaluate", body, (ValueError, OSError))


if __name__ == "__main__":
    raise SystemExit(main())
