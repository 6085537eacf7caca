"""``nnugen_sample ID CONFIG N OUT_DIR``: N synthetic cases from a trained generator (``nnugen_train --task ddpm``),
written in the dataset's file format, intensity units and geometry, optionally as an nnU-Net raw dataset."""

from __future__ import annotations

import argparse

from nnugen.entrypoints.cli_errors import run_reporting_errors
from nnugen.entrypoints.deprecated_flags import add_plans_and_progress


def build_parser() -> argparse.ArgumentParser:
    from nnugen import PLANS_IDENTIFIER
    from nnugen.config import SAMPLERS
    from nnugen.tasks import CONFIGURATIONS, SAMPLING_TASKS

    parser = argparse.ArgumentParser(
        prog="nnugen_sample",
        description="Generate N cases with a trained generator (nnUNet_results/DatasetX/<Trainer>__<PLANS>__"
                    "<CONFIG>/fold_F) and write them to OUT_DIR as CASE_XXXX channel files (+ CASE label maps) with "
                    "the dataset's spacing, origin, direction and intensity units, previews/ and sampling.json.")
    parser.add_argument("dataset", help="dataset ID or name")
    parser.add_argument("configuration", choices=CONFIGURATIONS, help="2d, 3d (= 3d_fullres), 3d_fullres, 3d_lowres")
    parser.add_argument("num_cases", type=int, metavar="N", help="number of cases to generate")
    parser.add_argument("output_folder", metavar="OUT_DIR",
                        help="output folder (new or empty, unless --continue or --overwrite)")
    parser.add_argument("--task", default="ddpm", choices=SAMPLING_TASKS,
                        help="ddpm (NnugenDDPMTrainer, default), adapter (NnugenDDPMTrainer_labelAdapter: images for "
                             "--labels-from maps) or ldm (NnugenLDMTrainer)")
    parser.add_argument("-f", default="0", help="fold whose model to use (default 0; or 'all')")
    parser.add_argument("-chk", default="checkpoint_final.pth", help="checkpoint (default checkpoint_final.pth)")
    add_plans_and_progress(parser, PLANS_IDENTIFIER, "show progress bars (cases and sampler steps) also when stdout "
                           "is not a terminal; by default they show in a terminal only")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    parser.set_defaults(progress=None)  # neither flag: bars when stdout is a terminal (run_flags.progress_wanted)
    parser.add_argument("--sampler", default=None, help=f"{', '.join(SAMPLERS)} (default: the model's plans)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's plans)")
    parser.add_argument("--eta", type=float, default=None, help="DDIM eta in [0, 1] (default: the model's plans)")
    parser.add_argument("--spacing", default=None,
                        help="step grid: uniform, trailing or log-snr (default: the model's plans, sampler.spacing)")
    parser.add_argument("--guidance-scale", dest="guidance_scale", type=float, default=None,
                        help="label-conditioned models: classifier-free guidance scale w, uncond + w (cond - uncond); "
                             "1 = none (default: the model's plans)")
    parser.add_argument("--seed", type=int, default=0,
                        help="base seed; case k samples with a seed derived from (seed, case_k), so any subset or "
                             "rerun gives the same files (default 0)")
    parser.add_argument("--size", nargs="+", default=["whole"], metavar="SIZE",
                        help="whole: the plan's median image size, denoised in overlapping patches (default); patch: "
                             "the training patch size; Z Y X (2 sizes for 2d): any shape in the plan's axis order, "
                             "each axis at least the patch, denoised in overlapping patches")
    parser.add_argument("--labels-from", dest="labels_from", default=None, metavar="DIR",
                        help="label-conditioned models: the label maps to generate images for (the first N files, "
                             "of the output's array shape, e.g. written by nnugen_sample)")
    parser.add_argument("--as-dataset", dest="as_dataset", default=None, metavar="DatasetNNN_Name",
                        help="write an nnU-Net raw dataset OUT_DIR/DatasetNNN_Name (imagesTr, labelsTr, dataset.json); "
                             "needs labels: a joint model or --labels-from")
    parser.add_argument("-num_parts", type=int, default=1,
                        help="split the cases into this many parts, as nnUNetv2_predict does (default 1)")
    parser.add_argument("-part_id", type=int, default=0,
                        help="which part this run writes (0 ... num_parts-1): case k belongs to part k %% num_parts; "
                             "all parts may write into the same OUT_DIR")
    parser.add_argument("--partition", nargs="+", type=int, default=None, metavar="PIECES",
                        help="under torchrun: cut every volume into PIECES per spatial axis (e.g. 2 1 1; their "
                             "product = --nproc_per_node x nodes), each process denoising one slab and exchanging "
                             "the overlaps every step; noise is drawn per voxel position, so the volume is the same "
                             "for any partition (1 1 1 in one process); rank 0 writes the files")
    parser.add_argument("--partition-timeout", dest="partition_timeout", type=float, default=600.0,
                        metavar="SECONDS", help="--partition: how long a process waits for its neighbours before it "
                                                "stops with an error (default 600)")
    parser.add_argument("-device", default="cuda", help="cuda (default), cpu or mps")
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty OUT_DIR, replacing files")
    parser.add_argument("--continue", "--c", dest="continue_sampling", action="store_true",
                        help="finish an interrupted run in OUT_DIR with the same arguments: keep the cases whose files "
                             "are all there, sample the others (the result equals an uninterrupted run)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        import sys
        from pathlib import Path

        from nnugen.inference.sample_api import SampleRequest, sample
        from nnugen.inference.sample_request import parse_size
        from nnugen.run_flags import progress_wanted

        request = SampleRequest(
            dataset=args.dataset, configuration=args.configuration, num_cases=args.num_cases,
            output_folder=Path(args.output_folder), task=args.task, fold=args.f, checkpoint=args.chk,
            plans=args.plans,
            sampler=args.sampler, steps=args.steps, eta=args.eta, spacing=args.spacing,
            guidance_scale=args.guidance_scale, seed=args.seed,
            labels_from=Path(args.labels_from) if args.labels_from else None, as_dataset=args.as_dataset,
            size=parse_size(args.size), device=args.device, progress=progress_wanted(args.progress, sys.stdout),
            overwrite=args.overwrite,
            continue_sampling=args.continue_sampling,
            num_parts=args.num_parts, part_id=args.part_id,
            partition=None if args.partition is None else tuple(args.partition),
            partition_timeout=args.partition_timeout)
        written = sample(request)
        if written or not request.partition:  # the other ranks of a partitioned run write nothing
            print(f"nnugen_sample: wrote {len(written)} file(s) to {args.output_folder}")
        return 0

    from nnugen.folders.checkpoint_files import CheckpointError

    return run_reporting_errors("nnugen_sample", body, (ValueError, OSError, CheckpointError))


if __name__ == "__main__":
    raise SystemExit(main())
