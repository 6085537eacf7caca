"""``nnugen_plan -d ID``: nnUNetPlans.json -> nnugenPlans.json with diffusion settings per configuration."""

from __future__ import annotations

import argparse
from pathlib import Path

from nnugen.entrypoints.cli_errors import run_reporting_errors
from nnugen.entrypoints.deprecated_flags import add_old_spelling


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nnugen_plan",
        description="Read nnUNetPlans.json, dataset.json and dataset_fingerprint.json of a preprocessed dataset and "
                    "write nnugenPlans.json next to them: the same configurations (preprocessed data reused) plus an "
                    "'nnugen' section each with the denoiser, diffusion, sampler, training and memory settings of "
                    "every task. Edits you make to nnugenPlans.json survive a re-run unless --overwrite.")
    parser.add_argument("-d", dest="dataset", required=True,
                        help="dataset ID or name, e.g. 4 or Dataset004_Hippocampus")
    parser.add_argument("-c", dest="configurations", nargs="+", default=[],
                        help="configurations to plan (2d, 3d = 3d_fullres, 3d_lowres); default: all in the plan")
    parser.add_argument("--gpu-memory-gb", type=float, default=8.0,
                        help="GPU memory budget for the memory plan (batch, accumulation, AMP, checkpointing); "
                             "default 8, as nnU-Net")
    parser.add_argument("--overwrite", action="store_true", help="re-plan from scratch, dropping your edits")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override one setting, e.g. --set segmentation.sampler.steps=10 (repeatable)")
    parser.add_argument("--overrides", type=Path, default=None, metavar="FILE.yaml",
                        help="YAML file of overrides (see the templates shipped with nnugen)")
    parser.add_argument("-p", dest="source_plans", default="nnUNetPlans", metavar="PLANS",
                        help="nnU-Net plans identifier to start from, e.g. nnUNetResEncUNetMPlans (default "
                             "nnUNetPlans); the output is always nnugenPlans.json")
    add_old_spelling(parser, "-plans_name", "-p", dest="source_plans")
    parser.add_argument("--no-check", action="store_true",
                        help="skip the dataset check (NaN / Inf voxels, truncated images) of the raw dataset")
    parser.add_argument("-np", type=int, default=2, help="processes for the dataset check (default 2)")
    parser.add_argument("--summary", action="store_true",
                        help="also print each planned task's network (torchinfo: parameters, output shape per stage, "
                             "activation estimate at the planned patch and batch); imports torch, which planning "
                             "alone does not")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from nnugen.folders.dataset_folders import raw_folder
        from nnugen_planner.dataset_check import check_raw_dataset
        from nnugen_planner.planner import PlanRequest, plan_dataset

        raw = raw_folder(args.dataset)
        if raw is None:
            print("nnugen_plan: raw dataset not found under nnUNet_raw; " + ("" if args.no_check else
                  "dataset check skipped; ") + "z-scored channels go back to original units with the foreground "
                  "statistics")
        elif not args.no_check:
            problems = check_raw_dataset(raw, num_processes=args.np)
            for problem in problems:
                print(f"{problem.path}: {problem.problem}")
            if problems:
                raise ValueError(f"{len(problems)} broken image file(s) in {raw} (listed above); fix them, re-run "
                                 "nnUNetv2_plan_and_preprocess, then nnugen_plan (or pass --no-check)")
        request = PlanRequest(dataset=args.dataset, configurations=tuple(args.configurations),
                              gpu_memory_gb=args.gpu_memory_gb, overwrite=args.overwrite, sets=tuple(args.sets),
                              overrides_file=args.overrides, source_plans=args.source_plans, raw_dataset=raw)
        target = plan_dataset(request)
        print(f"nnugen_plan: wrote {target}")
        _print_training_times(target, tuple(args.configurations))
        if args.summary:
            _print_network_summaries(target)
        return 0

    return run_reporting_errors("nnugen_plan", body, (ValueError, OSError))


def _print_training_times(plans_file: Path, requested: tuple[str, ...]) -> None:
    """The estimated time of each planned task's training (nnugen_planner/time_estimate.py's cost model)."""
    import json

    from nnugen_planner.planned_time import assumption_line, planned_times, unplanned_tasks
    from nnugen_planner.planner import num_segmentation_heads, resolve_configuration_names

    plans = json.loads(plans_file.read_text(encoding="utf-8"))
    dataset_json = json.loads((plans_file.parent / "dataset.json").read_text(encoding="utf-8"))
    channels = len(dataset_json.get("channel_names", dataset_json.get("modality", {})))
    names = resolve_configuration_names(requested, plans)
    for estimate in planned_times(plans, channels, num_segmentation_heads(dataset_json), names):
        print(estimate.line())
    print(assumption_line())
    for line in unplanned_tasks(plans, names):
        print(line)


def _print_network_summaries(plans_file: Path) -> None:
    """Each planned task's network (torchinfo, on the meta device: nothing is allocated) at its patch and batch."""
    import json

    from nnugen.models.model_summary import plan_summaries

    plans = json.loads(plans_file.read_text(encoding="utf-8"))
    dataset_json = json.loads((plans_file.parent / "dataset.json").read_text(encoding="utf-8"))
    for configuration, task, summary in plan_summaries(plans, dataset_json):
        first, *stages = summary.lines()
        print(f"nnugen_plan: {configuration} {task}: {first}", *stages, sep="\n")


if __name__ == "__main__":
    raise SystemExit(main())
