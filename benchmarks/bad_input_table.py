"""Bad input across every nnugen CLI: the message, the exit code and the files left behind, as a Markdown table.

Prepares a small 2D phantom dataset (planned and preprocessed by nnU-Net, nnugen_plan, and three short trainings:
nnU-Net baseline, diffusion segmentation, DDPM), then runs each CLI with one bad input. Before each command every
file under the work folder is listed with its size and modification time, and again after: any file added,
changed or removed counts as "left behind". The target is one line on stderr that says what to do, a non-zero
exit, and nothing written.

    python benchmarks/bad_input_table.py --work-dir /tmp/badinput [--output table.md]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nnugen.demo.phantom import PhantomSpec, write_phantom_dataset

BIN = Path(sys.executable).parent
DATASET, NAME = 984, "BadInputPhantom"
SHORT = ("epochs=1", "iterations_per_epoch=2", "val_iterations_per_epoch=1")


def cli(name: str) -> str:
    return str(BIN / name)


def environment(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
               nnUNet_results=str(root / "results"), nnUNet_def_n_proc="2", nnUNet_n_proc_DA="1")
    return env


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, capture_output=True, text=True)


def must(command: list[str], env: dict[str, str]) -> None:
    result = run(command, env)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def prepare(root: Path) -> None:
    env = environment(root)
    if (root / "prepared").is_file():
        return
    write_phantom_dataset(root / "raw", DATASET, NAME, 6, 2, PhantomSpec(shape=(64, 64)), seed=0)
    must([cli("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET), "-c", "2d", "-np", "2", "-npfp", "2"], env)
    sets = [item for task in ("baseline", "segmentation", "ddpm") for value in SHORT
            for item in ("--set", f"{task}.training.{value}")]
    must([cli("nnugen_plan"), "-d", str(DATASET), "-c", "2d", *sets], env)
    for task in ("baseline", "seg", "ddpm"):
        must([cli("nnugen_train"), str(DATASET), "0", "2d", "--task", task, "-device", "cpu", "--seed", "0"], env)
    (root / "prepared").write_text("")


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


# --- inputs made on the spot ----------------------------------------------------------------------------------------


def _copy_case(root: Path, folder: str, n_channels: int = 1) -> Path:
    target = root / "inputs" / folder
    target.mkdir(parents=True, exist_ok=True)
    source = next((root / "raw" / f"Dataset{DATASET}_{NAME}" / "imagesTs").glob("*_0000.nii.gz"))
    for channel in range(n_channels):
        shutil.copy(source, target / source.name.replace("_0000", f"_{channel:04d}"))
    return target


def _broken_dataset(root: Path, dataset: int, damage: Callable[[Path], None]) -> None:
    """A copy of the raw dataset under another ID with one image damaged."""
    source = root / "raw" / f"Dataset{DATASET}_{NAME}"
    target = root / "raw" / f"Dataset{dataset}_{NAME}"
    if not target.exists():
        shutil.copytree(source, target)
        damage(next((target / "imagesTr").glob("*_0000.nii.gz")))


def _nan_voxel(path: Path) -> None:
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    array.flat[array.size // 2] = np.nan
    damaged = sitk.GetImageFromArray(array)
    damaged.CopyInformation(image)
    sitk.WriteImage(damaged, str(path))


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage_checkpoint(root: Path) -> None:
    """An interrupted run of fold 1 (no checkpoint_final, which ``--c`` would load first) whose latest checkpoint is
    garbage; fold 0 keeps its finished model for the nnugen_sample rows."""
    fold = root / "results" / f"Dataset{DATASET}_{NAME}" / "NnugenDDPMTrainer__nnugenPlans__2d" / "fold_1"
    fold.mkdir(parents=True, exist_ok=True)
    (fold / "checkpoint_latest.pth").write_bytes(b"not a checkpoint, cut off by a full disk")


def _bad_labels(root: Path) -> Path:
    target = root / "inputs" / "bad_labels"
    target.mkdir(parents=True, exist_ok=True)
    label = next((root / "raw" / f"Dataset{DATASET}_{NAME}" / "labelsTr").glob("*.nii.gz"))
    image = sitk.ReadImage(str(label))
    array = sitk.GetArrayFromImage(image)
    array[:4, :4] = 7  # a label the dataset does not have
    damaged = sitk.GetImageFromArray(array)
    damaged.CopyInformation(image)
    sitk.WriteImage(damaged, str(target / label.name))
    return target


def _bids_root(root: Path) -> Path:
    bids = root / "inputs" / "bids"
    anat = bids / "sub-01" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "tiny", "BIDSVersion": "1.8.0"}))
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((8, 8, 8), np.float32)), str(anat / "sub-01_T1w.nii.gz"))
    return bids


def _earlier_samples(root: Path) -> None:
    """A finished nnugen_sample run (seed 0) for --continue to be refused on."""
    folder = root / "inputs" / "earlier_samples"
    if not (folder / "sampling.json").is_file():
        must([cli("nnugen_sample"), str(DATASET), "2d", "2", str(folder), "--seed", "0", "-device", "cpu"],
             environment(root))


def cases(root: Path) -> list[tuple[str, str, list[str], Callable[[], object] | None]]:
    """(CLI, what is wrong, command, setup run before the snapshot)."""
    d, out = str(DATASET), str(root / "outputs")
    predict = [cli("nnugen_predict"), "-d", d, "-c", "2d", "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0"]
    good_input = str(root / "inputs" / "one_case")
    sample = [cli("nnugen_sample"), d, "2d"]
    bids_labels = ["--labels", "labels:seg-manual"]
    return [
        ("nnugen_plan", "dataset not preprocessed by nnU-Net", [cli("nnugen_plan"), "-d", "977"], None),
        ("nnugen_plan", "unknown setting in --set", [cli("nnugen_plan"), "-d", d, "--set",
                                                     "segmentation.sampler.colour=red"], None),
        ("nnugen_plan", "sampler steps 0", [cli("nnugen_plan"), "-d", d, "--set", "segmentation.sampler.steps=0"],
         None),
        ("nnugen_plan", "anomaly strength 1.5", [cli("nnugen_plan"), "-d", d, "--set",
                                                 "anomaly.anomaly.strengths=[1.5]"], None),
        ("nnugen_plan", "--overrides file missing", [cli("nnugen_plan"), "-d", d, "--overrides",
                                                     str(root / "missing.yaml")], None),
        ("nnugen_check", "NaN voxel in a training image", [cli("nnugen_check"), "-d", "978"],
         lambda: _broken_dataset(root, 978, _nan_voxel)),
        ("nnugen_check", "truncated .nii.gz", [cli("nnugen_check"), "-d", "979"],
         lambda: _broken_dataset(root, 979, _truncate)),
        ("nnugen_train", "configuration not planned (3d_lowres)", [cli("nnugen_train"), d, "0", "3d_lowres",
                                                                   "-device", "cpu"], None),
        ("nnugen_train", "fold 'x'", [cli("nnugen_train"), d, "x", "2d", "-device", "cpu"], None),
        ("nnugen_train", "device 'tpu'", [cli("nnugen_train"), d, "0", "2d", "-device", "tpu"], None),
        ("nnugen_train", "--c with a corrupt checkpoint_latest.pth", [cli("nnugen_train"), d, "1", "2d", "--task",
                                                                      "ddpm", "-device", "cpu", "--c"],
         lambda: _garbage_checkpoint(root)),
        ("nnugen_train", "anomaly task, no healthy training case", [cli("nnugen_train"), d, "0", "2d", "--task",
                                                                    "anomaly", "-device", "cpu"], None),
        ("nnugen_predict", "--steps 0", [*predict, "-i", good_input, "-o", out, "--steps", "0"], None),
        ("nnugen_predict", "--ensemble-size 0", [*predict, "-i", good_input, "-o", out, "--ensemble-size", "0"], None),
        ("nnugen_predict", "unknown sampler", [*predict, "-i", good_input, "-o", out, "--sampler", "euler"], None),
        ("nnugen_predict", "model of another trainer (nnU-Net baseline)",
         [*predict, "-i", good_input, "-o", out, "-tr", "NnugenBaselineTrainer"], None),
        ("nnugen_predict", "two channels for a one-channel model",
         [*predict, "-i", str(root / "inputs" / "two_channels"), "-o", out],
         lambda: _copy_case(root, "two_channels", 2)),
        ("nnugen_predict", "empty input folder", [*predict, "-i", str(root / "inputs" / "empty"), "-o", out],
         lambda: (root / "inputs" / "empty").mkdir(parents=True, exist_ok=True)),
        ("nnugen_predict", "fold that was not trained", [*predict[:6], "3", *predict[7:], "-i", good_input, "-o",
                                                         out], None),
        ("nnugen_sample", "N = 0", [*sample, "0", out, "-device", "cpu"], None),
        ("nnugen_sample", "output folder holds files", [*sample, "2", str(root / "inputs"), "-device", "cpu"], None),
        ("nnugen_sample", "latent model that was not trained", [*sample, "2", out, "--task", "ldm",
                                                                         "-device", "cpu"], None),
        ("nnugen_sample", "--labels-from for a joint (not label-conditioned) model",
         [*sample, "1", out, "--labels-from", str(root / "inputs" / "bad_labels"), "-device", "cpu"],
         lambda: _bad_labels(root)),
        ("nnugen_sample", "--continue with another --seed than the interrupted run",
         [*sample, "2", str(root / "inputs" / "earlier_samples"), "--seed", "1", "--continue", "-device", "cpu"],
         lambda: _earlier_samples(root)),
        ("nnugen_convert_bids", "not a BIDS root", [cli("nnugen_convert_bids"), str(root / "inputs" / "empty"),
                                                    "985", "Bids", "--contrasts", "T1w", *bids_labels],
         lambda: (root / "inputs" / "empty").mkdir(parents=True, exist_ok=True)),
        ("nnugen_convert_bids", "unknown contrast", [cli("nnugen_convert_bids"), str(root / "inputs" / "bids"),
                                                     "985", "Bids", "--contrasts", "FLAIR", *bids_labels],
         lambda: _bids_root(root)),
        ("nnugen_demo", "device 'tpu'", [cli("nnugen_demo"), "--work-dir", str(root / "demo"), "-device", "tpu"],
         None),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--output", type=Path, default=None, help="also write the Markdown table here")
    args = parser.parse_args()
    root = args.work_dir.resolve()
    prepare(root)
    _copy_case(root, "one_case")
    env = environment(root)
    rows, records = ["| CLI | bad input | message (stderr) | exit | files left behind |", "|---|---|---|---|---|"], []
    for program, what, command, setup in cases(root):
        if setup is not None:
            setup()
        before = snapshot(root)
        result = run(command, env)
        after = snapshot(root)
        left = sorted(set(after) - set(before)) + sorted(k for k in before if k in after and after[k] != before[k])
        lost = sorted(set(before) - set(after))
        lines = result.stderr.strip().splitlines()
        message = lines[-1] if lines else "(nothing on stderr)"
        records.append({"cli": program, "input": what, "exit": result.returncode, "stderr_lines": len(lines),
                        "message": message, "left_behind": left, "removed": lost})
        files = ", ".join(left + [f"removed {k}" for k in lost]) or "none"
        one_line = "" if len(lines) == 1 else f" ({len(lines)} lines)"
        rows.append(f"| `{program}` | {what} | {message.replace('|', '/')}{one_line} | {result.returncode} | {files} |")
        print(rows[-1], flush=True)
    table = "\n".join(rows)
    (root / "bad_input_table.json").write_text(json.dumps(records, indent=2))
    if args.output is not None:
        args.output.write_text(table + "\n")
    print("\n" + table)


if __name__ == "__main__":
    main()
