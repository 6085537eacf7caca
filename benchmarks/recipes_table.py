"""The 3D recipes table of docs/generation.md, computed by the planners themselves: for a representative dataset
(a brain MRI at 1 mm, an abdominal CT), a number of training cases and a GPU memory, what nnU-Net's planner
(``ExperimentPlanner(..., gpu_memory_target_in_gb=G).plan_experiment()``, as ``nnUNetv2_plan_experiment
-gpu_memory_target G`` runs it) and then ``nnugen_plan --gpu-memory-gb G`` (``plan_dataset``) plan for 3d_fullres,
and the seconds per iteration of the cost model (nnugen_planner/time_estimate.py) for the planned DDPM and latent
diffusion model.

Each dataset is a fingerprint written to a temporary folder (every case the median case: the planners use medians,
spacings and the number of cases, not the images); nnU-Net's 3d_lowres search is switched off (it plans only the
cascade), everything else is the planners' own code. Prints a Markdown table.

    python benchmarks/recipes_table.py [--cases 30 150 500] [--gpu-gb 16 24 40 80]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Fingerprint:
    """What nnU-Net's planner reads of a dataset: spacing and median shape after cropping (z, y, x), channel names
    and labels."""

    name: str
    spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    channels: tuple[str, ...]
    labels: int  # background included


DATASETS = (
    # a skull-stripped or brain-cropped T1 at 1 mm with three foreground labels (e.g. tissue classes or tumour parts)
    Fingerprint("brain MRI, 1 mm, 150 x 180 x 150", (1.0, 1.0, 1.0), (150, 180, 150), ("T1",), 4),
    # an abdominal CT cropped to the body, 2.5 mm slices, 0.8 mm in-plane, 13 organs (BTCV-like)
    Fingerprint("abdominal CT, 2.5 x 0.8 x 0.8 mm, 160 x 400 x 400", (2.5, 0.8, 0.8), (160, 400, 400), ("CT",), 14),
)


def write_dataset(root: Path, dataset_id: int, fingerprint: Fingerprint, cases: int) -> str:
    """nnUNet_raw/<name>/dataset.json and nnUNet_preprocessed/<name>/dataset_fingerprint.json; returns the name."""
    name = f"Dataset{dataset_id:03d}_Recipe"
    raw, preprocessed = root / "raw" / name, root / "preprocessed" / name
    raw.mkdir(parents=True)
    preprocessed.mkdir(parents=True)
    labels = {"background": 0, **{f"label{i}": i for i in range(1, fingerprint.labels)}}
    # nnU-Net lists the training files; they need not exist for planning (the reader is named, not guessed)
    files = {f"case_{i:04d}": {"images": [f"imagesTr/case_{i:04d}_0000.nii.gz"],
                               "label": f"labelsTr/case_{i:04d}.nii.gz"} for i in range(cases)}
    dataset_json = {"channel_names": dict(enumerate(fingerprint.channels)), "labels": labels, "numTraining": cases,
                    "file_ending": ".nii.gz", "overwrite_image_reader_writer": "SimpleITKIO", "dataset": files}
    (raw / "dataset.json").write_text(json.dumps(dataset_json), encoding="utf-8")
    intensities = {"mean": 0.0, "median": 0.0, "std": 1.0, "min": -3.0, "max": 3.0, "percentile_00_5": -2.5,
                   "percentile_99_5": 2.5}
    if "CT" in fingerprint.channels:
        intensities = {"mean": 60.0, "median": 60.0, "std": 60.0, "min": -1000.0, "max": 2000.0,
                       "percentile_00_5": -150.0, "percentile_99_5": 300.0}
    fingerprint_json = {"spacings": [list(fingerprint.spacing)] * cases, "shapes_after_crop": [list(fingerprint.shape)]
                        * cases, "median_relative_size_after_cropping": 1.0,
                        "foreground_intensity_properties_per_channel": {
                            str(c): intensities for c in range(len(fingerprint.channels))}}
    (preprocessed / "dataset_fingerprint.json").write_text(json.dumps(fingerprint_json), encoding="utf-8")
    return name


def plan(name: str, gpu_gb: float, fingerprint: Fingerprint) -> dict:
    """nnU-Net's plan at ``gpu_gb``, then nnugen's, for 3d_fullres; a row of the table."""
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner

    from nnugen.config import NnugenSection
    from nnugen_planner.planned_time import planned_times, task_network
    from nnugen_planner.planner import PlanRequest, plan_dataset
    from nnugen_planner.time_estimate import CPU_THROUGHPUT, GPU_THROUGHPUT

    with contextlib.redirect_stdout(io.StringIO()):
        planner = ExperimentPlanner(name, gpu_memory_target_in_gb=gpu_gb)
        planner.lowres_creation_threshold = 0.0  # 3d_fullres only
        planner.plan_experiment()
    plans = json.loads(plan_dataset(PlanRequest(name, ("3d_fullres",), gpu_gb, overwrite=True)).read_text("utf-8"))
    configuration = plans["configurations"]["3d_fullres"]
    section = NnugenSection.from_dict(configuration["nnugen"])
    n_channels, n_classes = len(fingerprint.channels), fingerprint.labels
    gpu = {t.task: t for t in planned_times(plans, n_channels, n_classes, ["3d_fullres"], GPU_THROUGHPUT)}
    cpu = {t.task: t for t in planned_times(plans, n_channels, n_classes, ["3d_fullres"], CPU_THROUGHPUT)}
    ldm_patch = task_network("ldm", section, configuration, "3d_fullres", n_channels, n_classes).shape.patch_size \
        if "ldm" in section.tasks else None
    patch = configuration["patch_size"]
    return {"patch": patch, "nnunet_batch": configuration["batch_size"], "section": section, "gpu": gpu, "cpu": cpu,
            "ldm_patch": ldm_patch, "median_voxels": math.prod(configuration["median_image_size_in_voxels"])}


def memory_cell(section, task: str) -> str:
    memory = section.task(task).memory
    accumulated = f" x {memory.grad_accumulation}" if memory.grad_accumulation > 1 else ""
    checkpointing = ", ckpt" if memory.activation_checkpointing else ""
    return f"{memory.batch_size}{accumulated}{checkpointing} ({memory.estimated_gb:.1f} GB)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, nargs="+", default=[30, 150, 500])
    parser.add_argument("--gpu-gb", type=float, nargs="+", default=[16.0, 24.0, 40.0, 80.0])
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nnugen_recipes_"))
    os.environ.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
                      nnUNet_results=str(root / "results"))
    header = ("| training cases | GPU GB | nnU-Net patch, batch | denoiser features | DDPM batch (x accum., ckpt, "
              "estimate) | DDPM s / it (GPU) | 1000 x 250 its (GPU) | LDM latent patch, batch | LDM s / it (GPU) | "
              "its per pass over the data (DDPM) |")
    dataset_id = 990
    for fingerprint in DATASETS:
        print(f"\n{fingerprint.name}, {len(fingerprint.channels)} channel(s), {fingerprint.labels} labels "
              "(background included), 3d_fullres\n")
        print(header)
        print("|" + " --- |" * (header.count("|") - 1))
        for cases in args.cases:
            for gpu_gb in args.gpu_gb:
                dataset_id += 1
                name = write_dataset(root, dataset_id, fingerprint, cases)
                row = plan(name, gpu_gb, fingerprint)
                section, gpu = row["section"], row["gpu"]
                ddpm = gpu["ddpm"]
                features = section.task("ddpm").denoiser.features_per_stage
                ldm = gpu.get("ldm")
                ldm_cell = "-" if ldm is None else \
                    f"{'x'.join(map(str, row['ldm_patch']))}, {memory_cell(section, 'ldm')}"
                ldm_time = "-" if ldm is None else f"{ldm.seconds_per_iteration:.2g}"
                samples_per_iteration = ddpm.batch_size * ddpm.grad_accumulation
                passes = cases * row["median_voxels"] / (samples_per_iteration * math.prod(row["patch"]))
                print(f"| {cases} | {gpu_gb:g} | {'x'.join(map(str, row['patch']))}, {row['nnunet_batch']} | "
                      f"{features[0]}-{max(features)} ({len(features)} stages) | {memory_cell(section, 'ddpm')} | "
                      f"{ddpm.seconds_per_iteration:.2g} | {ddpm.total_seconds / 3600:.0f} h | {ldm_cell} | "
                      f"{ldm_time} | {passes:.0f} |")


if __name__ == "__main__":
    main()
