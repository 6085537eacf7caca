"""``nnugen_check -d ID``: find what nnU-Net's integrity check cannot see (NaN / Inf voxels, truncated images)."""

from __future__ import annotations

import argparse

from nnugen.entrypoints.cli_errors import run_reporting_errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nnugen_check",
        description="Check every image and label of a raw nnU-Net dataset for NaN / Inf voxels, truncated compressed "
                    "files and unreadable files (SimpleITK reads the first two as zeros without an error). Prints one "
                    "line per broken file on stdout; exit code 1 and one error line if any.")
    parser.add_argument("-d", dest="dataset", required=True, help="dataset ID or name under nnUNet_raw")
    parser.add_argument("-np", type=int, default=2, help="processes (default 2)")
    args = parser.parse_args(argv)

    def body() -> int:
        from nnugen.folders.dataset_folders import dataset_name, raw_folder
        from nnugen_planner.dataset_check import check_raw_dataset

        folder = raw_folder(args.dataset)
        if folder is None:
            raise ValueError(f"dataset {args.dataset} not found under nnUNet_raw; check the ID and nnUNet_raw")
        problems = check_raw_dataset(folder, num_processes=args.np)
        for problem in problems:
            print(f"{problem.path}: {problem.problem}")
        if problems:  # the report stays on stdout; the verdict is the one error line every nnugen CLI gives
            raise ValueError(f"{dataset_name(args.dataset)}: {len(problems)} problem(s), listed on stdout; replace "
                             "or remove those files, then run nnugen_check again")
        print(f"nnugen_check: {dataset_name(args.dataset)}: 0 problem(s)")
        return 0

    return run_reporting_errors("nnugen_check", body, (ValueError, OSError))


if __name__ == "__main__":
    raise SystemExit(main())
