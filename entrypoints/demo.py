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
            "Show every nnugen capability working, on small datasets made on the spot (2D phantoms by default), "
            "through the real CLIs: nnU-Net's baseline and diffusion segmentation with the same plan and budget "
            "(Dice, HD95, and how well the ensemble's uncertainty finds its errors), a DDPM that generates images "
            "with their label maps (distance to real against noise's, labels checked by nnU-Net), and a model of "
            "healthy cases that finds inserted lesions (pixel AUPRC, Dice). Ends with WORK_DIR/report.html (and "
            "report.png): tables, pictures, capability checks and the commands. nnUNet_raw / _preprocessed / "
            "_results are set to folders in the work folder where unset."))
    parser.add_argument("--work-dir", type=Path, default=Path("nnugen_work"),
                        help="work folder (default ./nnugen_work)")
    dimension = parser.add_mutually_exclusive_group()
    dimension.add_argument("--2d", dest="three_d", action="store_false",
                           help="2D phantoms and nnU-Net's 2d configuration (the default)")
    dimension.add_argument("--3d", dest="three_d", action="store_true",
                           help="3D phantoms and 3d_fullres instead (several times longer)")
    parser.set_defaults(three_d=False)
    parser.add_argument("--quick", action="store_true",
                        help="shorter training (about 2.5 minutes on 2 CPU cores; the default about 5)")
    parser.add_argument("--real", action="store_true",
                        help="real anatomy instead of phantoms: axial brain slices of the MNI152 template bundled "
                             "with nilearn, augmented into cases (with --3d: its whole 3 mm volumes); needs pip "
                             "install 'nnugen[real]'; the output says what is real")
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
        run_demo(DemoRequest(work_dir=args.work_dir, three_d=args.three_d, quick=args.quick, device=device,
                             real=args.real, parts=tuple(dict.fromkeys(args.parts))))
        return 0

    return run_reporting_errors("nnugen_demo", body, (ValueError, OSError, RuntimeError))


if __name__ == "__main__":
    raise SystemExit(main())
