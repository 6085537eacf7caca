"""``nnugen_demo``: the pipeline end to end on procedural phantoms, nothing downloaded, in minutes on a CPU."""

from __future__ import annotations

import argparse
from pathlib import Path

from nnugen.entrypoints.cli_errors import run_reporting_errors
from nnugen.entrypoints.deprecated_flags import add_old_spelling


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nnugen_demo",
        description=(
            "Write a small phantom dataset (synthetic 3D MRI-like scans with two foreground classes) in nnU-Net raw "
            "format, then run nnUNetv2_plan_and_preprocess, nnugen_plan, nnugen_train (nnU-Net baseline and diffusion "
            "segmentation, same plan and budget), nnUNetv2_predict on held-out cases, and print Dice per class. Then "
            "train a small DDPM that generates images with their labels and write samples with nnugen_sample, and "
            "train a healthy-only anomaly model that finds inserted lesions (pixel AUPRC and Dice). "
            "nnUNet_raw / _preprocessed / _results are set to folders in the work folder where unset."))
    parser.add_argument("--work-dir", type=Path, default=Path("nnugen_work"),
                        help="work folder (default ./nnugen_work)")
    parser.add_argument("--2d", dest="two_d", action="store_true", help="2D phantoms and the 2d configuration")
    parser.add_argument("--quick", action="store_true", help="smaller and shorter (about 3 minutes on 2 CPU cores)")
    parser.add_argument("--real", action="store_true",
                        help="real anatomy instead of phantoms: the MNI152 template bundled with nilearn, augmented "
                             "into cases (needs pip install 'nnugen[real]'); the output says what is real")
    parser.add_argument("--parts", nargs="+", default=["seg", "generation", "anomaly"],
                        choices=["seg", "generation", "anomaly"],
                        help="which parts to run (default all): seg (baseline vs diffusion segmentation), generation "
                             "(DDPM image + label samples), anomaly (lesions from a healthy-only model)")
    parser.add_argument("-device", dest="device", default=None,
                        help="cpu, cuda or mps (default: cuda if available, else cpu)")
    add_old_spelling(parser, "--device", "-device", dest="device")
    args = parser.parse_args(argv)

    def body() -> int:
        from nnugen.demo.demo_api import DemoRequest, run_demo
        from nnugen.devices import torch_device

        device = args.device
        if device is None:
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_device(device)  # before anything is written: a bad device would fail minutes in
        run_demo(DemoRequest(work_dir=args.work_dir, two_d=args.two_d, quick=args.quick, device=device,
                             real=args.real, parts=tuple(dict.fromkeys(args.parts))))
        return 0

    return run_reporting_errors("nnugen_demo", body, (ValueError, OSError, RuntimeError))


if __name__ == "__main__":
    raise SystemExit(main())
