"""``nnugen_convert_bids BIDS_ROOT DATASET_ID NAME --contrasts ...``: a BIDS dataset -> an nnU-Net raw dataset."""

from __future__ import annotations

import argparse
from pathlib import Path

from nnugen.entrypoints.cli_errors import run_reporting_errors

PROG = "nnugen_convert_bids"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Turn a BIDS dataset into the nnU-Net raw dataset $nnUNet_raw/DatasetXXX_NAME (imagesTr, "
                    "labelsTr, dataset.json). A case is one subject, or one session of a subject; channel i is the "
                    "i-th contrast of --contrasts; the label is the case's file in derivatives/PIPELINE whose name "
                    "ends in _SUFFIX.nii.gz. Cases missing a contrast, and for --task seg cases without a label, are "
                    "skipped with one line each. Needs pybids: pip install 'nnugen[bids]'. See docs/bids.md.",
        epilog="example (spine-generic): nnugen_convert_bids ~/data-multi-subject 501 SpineGeneric --contrasts T2w "
               "--labels labels:seg-manual")
    parser.add_argument("bids_root", type=Path, metavar="BIDS_ROOT",
                        help="folder holding the BIDS dataset_description.json")
    parser.add_argument("dataset_id", type=int, metavar="DATASET_ID", help="nnU-Net dataset ID, 1 to 999")
    parser.add_argument("name", metavar="NAME", help="dataset name (letters, digits, '-', '_'); the folder is "
                                                     "DatasetXXX_NAME and the cases NAME_sub-01[_ses-01]")
    parser.add_argument("--contrasts", nargs="+", required=True, metavar="CONTRAST",
                        help="BIDS suffixes, one channel each in this order, e.g. T1w T2w; add entities to pick one "
                             "of several images, e.g. acq-sag_T2w")
    parser.add_argument("--labels", metavar="PIPELINE:SUFFIX", default=None,
                        help="label files: derivatives/PIPELINE/sub-*/[ses-*/]*_SUFFIX.nii.gz, e.g. labels:seg-manual "
                             "or PIPELINE:desc-brain_mask. Float masks are binarised at 0.5, integer labels kept")
    parser.add_argument("--healthy-list", type=Path, default=None, metavar="FILE",
                        help="subject ids, one a line (sub-03): every case of these subjects gets an all-zero label, "
                             "even where a label file exists, and is listed in healthy_cases.txt")
    parser.add_argument("--task", choices=("seg", "anomaly"), default="seg",
                        help="seg (default): cases without a label file are skipped. anomaly: they are kept as "
                             "healthy cases with an all-zero label, listed in healthy_cases.txt; --labels optional")
    parser.add_argument("--label-names", nargs="+", default=[], metavar="NAME",
                        help="dataset.json names of label values 1, 2, ... (default: SUFFIX, or 'lesion' without "
                             "--labels)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from nnugen.bids import BidsRequest, convert_bids

        request = BidsRequest(bids_root=args.bids_root, dataset_id=args.dataset_id, name=args.name,
                              contrasts=tuple(args.contrasts), labels=args.labels, healthy_list=args.healthy_list,
                              task=args.task, label_names=tuple(args.label_names))
        report = convert_bids(request)
        for skipped in report.skipped:
            print(f"skipped {skipped.name}: {skipped.reason}")
        healthy = f", {len(report.healthy_cases)} healthy (all-zero label)" if report.healthy_cases else ""
        print(f"{PROG}: wrote {len(report.cases)} case(s){healthy}, skipped {len(report.skipped)}, labels "
              f"{report.labels} to {report.dataset_folder}")
        print(f"next: nnUNetv2_plan_and_preprocess -d {args.dataset_id} --verify_dataset_integrity")
        return 0

    return run_reporting_errors(PROG, body, (ValueError, OSError))


if __name__ == "__main__":
    raise SystemExit(main())
