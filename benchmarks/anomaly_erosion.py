"""The anomaly map's region eroded (``anomaly.erode_region``, issue 20: "anomaly maps light up at the body's edge").

One model, several erosions, through the real CLIs: ``run_anomaly_demo`` trains the demo's anomaly model (2D
phantoms with synthetic lesions; ``--3d`` for its 3D size; a model already in WORK is reused); then, for each
``--erode N`` (0 = off), the setting is written into the plans (nnUNet_preprocessed's and the model folder's copy
alike), ``nnugen_train ... --val`` chooses the threshold again on the validation lesions with the new region, and the
held-out cases are predicted and scored again (``anomaly_demo.predict_held_out``). Besides pixel AUPRC and Dice it
reports where the false positives lie (the share of them within 2 voxels of the body's edge, either side of it) and
the validation Dice at the threshold chosen (threshold.json), which a user can see without held-out lesions.

    python benchmarks/anomaly_erosion.py --work-dir /tmp/erosion --erode 0 1 2 3 [--search 8] [--3d] [-device cpu]

``--search N`` rows choose the erosion with the threshold on the validation cases among 0..N (``anomaly.erode_search``,
what the planner sets), the "used" column says which.

Writes WORK/anomaly_erosion.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from nnugen.atomic_files import atomic_write_json
from nnugen.demo.anomaly_demo import (
    DATASET_ID,
    TRAINER,
    anomaly_demo_size,
    predict_held_out,
    run_anomaly_demo,
)
from nnugen.demo.commands import cli, run_logged, set_nnunet_folders
from nnugen.folders.model_folder import ModelFolder
from nnugen.trainers.anomaly_threshold_hooks import SUMMARY_FILE, THRESHOLD_FILE


def set_erosion(plans_file: Path, configuration: str, voxels: int, search: int) -> None:
    plans = json.loads(plans_file.read_text(encoding="utf-8"))
    anomaly = plans["configurations"][configuration]["nnugen"]["tasks"]["anomaly"]["anomaly"]
    if "median_filter" not in anomaly:
        raise SystemExit(f"{plans_file}: no anomaly settings where expected")
    anomaly["erode_region"], anomaly["erode_search"] = voxels, search
    atomic_write_json(plans_file, plans)


def _read(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def false_positives_at_the_edge(raw: Path, segmentations: Path) -> dict:
    """False-positive voxels of the held-out segmentations, and the share of them within 2 voxels of the body's
    edge (on either side; body: nnugen's body_mask of the image, as the map's region uses it)."""
    from nnugen.anomaly import body_mask

    near, total = 0, 0
    for label_file in sorted((raw / "labelsTs").glob("*.nii.gz")):
        case = label_file.name[: -len(".nii.gz")]
        image = _read(raw / "imagesTs" / f"{case}_0000.nii.gz").astype(np.float32)
        body = body_mask(image[None, None])[0, 0]
        ring = (ndimage.binary_dilation(body, iterations=2) & ~ndimage.binary_erosion(body, iterations=2))
        false_positive = (_read(segmentations / f"{case}.nii.gz") == 1) & ~(_read(label_file) > 0)
        near += int((false_positive & ring).sum())
        total += int(false_positive.sum())
    return {"false_positive_voxels": total, "false_positives_at_edge": near / total if total else 0.0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--erode", type=int, nargs="*", default=[], metavar="N", help="fixed erosions (erode_region)")
    parser.add_argument("--search", type=int, nargs="*", default=[], metavar="N",
                        help="erosions chosen on validation among 0..N (erode_search)")
    parser.add_argument("--3d", dest="three_d", action="store_true")
    parser.add_argument("-device", default="cpu")
    args = parser.parse_args(argv)
    work, log = args.work_dir, args.work_dir / "commands.log"
    work.mkdir(parents=True, exist_ok=True)
    say = lambda line: print(line, flush=True)  # noqa: E731
    set_nnunet_folders(work)  # nnUNet_* inside WORK unless set (as the demo does)
    configuration, short = ("3d_fullres", "3d") if args.three_d else ("2d", "2d")
    folder = f"Dataset{DATASET_ID:03d}_nnugenLesions{'3D' if args.three_d else '2D'}"
    raw = work / "nnUNet_raw" / folder
    model = ModelFolder.of(folder, TRAINER, configuration, results=work / "nnUNet_results")
    if not (model.fold(0) / "checkpoint_final.pth").is_file():  # an earlier run's model is scored again
        run_anomaly_demo(work, anomaly_demo_size(False, args.three_d), args.device, say, log)
    rows = []
    settings = [(voxels, 0) for voxels in args.erode] + [(0, search) for search in args.search]
    for voxels, search in settings:
        for plans_file in (work / "nnUNet_preprocessed" / folder / "nnugenPlans.json", model.path / "plans.json"):
            set_erosion(plans_file, configuration, voxels, search)
        name = f"search 0..{search}" if search else str(voxels)
        say(f"erosion {name}: nnugen_train --val (the threshold again), then the held-out cases")
        run_logged([cli("nnugen_train"), str(DATASET_ID), "0", short, "--task", "anomaly", "-device", args.device,
                    "--val"], log)
        chosen = json.loads((model.fold(0) / THRESHOLD_FILE).read_text(encoding="utf-8"))
        summary = json.loads((model.fold(0) / "validation" / SUMMARY_FILE).read_text(encoding="utf-8"))
        numbers = predict_held_out(raw, model, configuration, args.device, work, say, log).numbers
        rows.append({"erosion": name, "erode_region": summary.get("erode_region", voxels), **numbers,
                     "validation_dice": chosen["value"],
                     **false_positives_at_the_edge(raw, work / "predictions" / TRAINER)})
    print(f"{'erosion':>12} {'used':>4} {'AUPRC':>7} {'x prev':>7} {'Dice':>6} {'threshold':>10} {'FP voxels':>9} "
          f"{'at edge':>7} {'val Dice':>8}")
    for row in rows:
        print(f"{row['erosion']:>12} {row['erode_region']:>4} {row['pixel_auprc']:7.3f} "
              f"{row['pixel_auprc'] / row['prevalence']:7.2f} "
              f"{row['dice']:6.3f} {row['threshold']:10.4g} {row['false_positive_voxels']:9d} "
              f"{row['false_positives_at_edge']:7.2f} {row['validation_dice']:8.3f}")
    atomic_write_json(work / "anomaly_erosion.json", {"rows": rows, "command": sys.argv})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
