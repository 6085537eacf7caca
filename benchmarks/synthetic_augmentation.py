"""Synthetic cases as augmentation for nnU-Net in the low-data regime (issue 18, part 3).

The data are generation_curve_2d.py's axial MNI152 slices (Dataset981_GenCurveAxial: 378 training slices of 12
augmented volumes, 126 held-out slices of 4 others, 65 x 52, labels grey / white matter). Everything runs through the
real CLIs:

1. ``nnUNetv2_plan_and_preprocess -c 2d`` of the full dataset: its nnUNetPlans.json is the one plan of every dataset
   below (``nnUNetv2_move_plans_between_datasets``, then ``nnUNetv2_preprocess``), so patch, network and
   normalisation do not change with the training set.
2. Real subsets of N slices (``--ns``, nested: the first N of ``REAL_SLICES``, one slice per training volume 0-7, at
   the fractions ``POSITIONS`` of that volume's slice range), each an nnU-Net dataset of its own.
3. Per N: a label-conditioned DDPM (``nnugen_plan --set ddpm.generation.mode=label_conditioned``, v + min-SNR-5, a
   small denoiser, no augmentation, ``--gen-epochs`` x ``--gen-iterations``) trained on those N slices only: a
   generator that saw more labelled slices than the segmenter would smuggle in the labelled data the comparison holds
   back. ``--k`` deformations of each real label map (nnugen/demo/deformed_labels.py, seeded by slice and
   deformation, so the N = 2 maps are among the N = 4 ones), then ``nnugen_sample --labels-from --as-dataset``
   (seed 0, the plan's sampler) writes N x K synthetic cases for them.
4. Per N and training seed (``--seeds``): nnU-Net 2d (``nnugen_train --task baseline``: nnU-Net's trainer, network and
   augmentation with the budget ``--seg-epochs`` x ``--seg-iterations`` at batch ``--seg-batch``, fold all) on (a) the
   N real slices and (b) the N real + N x K synthetic ones; ``nnUNetv2_predict`` (no TTA) of ``--test-per-volume``
   evenly spaced slices of each held-out volume; Dice of grey and white matter with nnU-Net's statistics
   (nnugen.evaluation.folder_scores), and their mean.
5. The mismatch check: nnU-Net 2d with the same budget on all 378 real training slices (``--mismatch-fold 0``: on
   nnU-Net's fold 0, 4/5 of them, when its final validation of all 378 costs too long) predicts the same held-out
   slices and every synthetic set; its Dice against the synthetic images' conditioning label maps, next to its Dice on
   real slices, says whether the generated images show the anatomy of their labels.

Results go to WORK/synthetic_augmentation.json (rewritten after each finished step; a rerun skips what is finished)
and print as Markdown tables; ``--figure`` is a PNG of the largest N: real slices, their labels, deformed labels and
the images generated for them.

    nnUNet_def_n_proc=2 nnUNet_n_proc_DA=1 python benchmarks/synthetic_augmentation.py --work-dir W \
        --ns 2 4 8 --k 4 --seeds 0 1 2 --figure docs/synthetic_augmentation.png
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from generation_curve_2d import DATASETS, epoch_seconds, run_settings, set_arguments, write_slice_dataset

from nnugen.atomic_files import atomic_write_json
from nnugen.demo.commands import cli, run_logged, set_nnunet_folders

FULL = DATASETS["axial"][0]
CONFIGURATION = "2d"
POSITIONS = (0.5, 0.3, 0.7, 0.4, 0.6, 0.2, 0.8, 0.45)
"""Where in its volume's slice range (0 = first kept slice, 1 = last) the real slice of training volume v lies."""
REAL, MIX, SYNTH = 990, 993, 996  # dataset IDs: + index of N in --ns
TRAINER = "NnugenBaselineTrainer"
LABELS = {"background": 0, "grey_matter": 1, "white_matter": 2}


def volume_cases(folder: Path, volume: int) -> list[str]:
    """Case names of one volume's slices in ``folder`` (labels), in slice order."""
    return sorted(p.name[: -len(".nii.gz")] for p in folder.glob(f"*_{volume:02d}[0-9][0-9].nii.gz"))


def real_slices(raw: Path, n: int) -> list[str]:
    """The first ``n`` of the nested real subsets: volume v's slice at ``POSITIONS[v]``."""
    chosen = []
    for volume in range(n):
        cases = volume_cases(raw / "labelsTr", volume)
        chosen.append(cases[round(POSITIONS[volume] * (len(cases) - 1))])
    return chosen


def test_slices(raw: Path, per_volume: int) -> list[str]:
    volumes = sorted({int(p.name.split("_")[-1][:2]) for p in (raw / "labelsTs").glob("*.nii.gz")})
    chosen = []
    for volume in volumes:
        cases = volume_cases(raw / "labelsTs", volume)
        chosen += [cases[i] for i in np.unique(np.linspace(0, len(cases) - 1, per_volume).round().astype(int))]
    return chosen


def write_dataset(folder: Path, pairs: list[tuple[Path, Path, str]]) -> Path:
    """An nnU-Net raw dataset of (image, label, case name) copies."""
    from nnugen.folders.dataset_json import write_dataset_json

    if (folder / "dataset.json").is_file():
        return folder
    for image, label, case in pairs:
        for source, target in ((image, folder / "imagesTr" / f"{case}_0000.nii.gz"),
                               (label, folder / "labelsTr" / f"{case}.nii.gz")):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    write_dataset_json(folder, {"0": "T1"}, LABELS, len(pairs), ".nii.gz", dataset_name=folder.name.split("_", 1)[1],
                       license="MNI152 2009 template: see nilearn's documentation")
    return folder


def write_deformed_labels(label_files: list[Path], k: int, out: Path) -> list[Path]:
    """``k`` deformed copies of each label map, ``map_{i*k+j:04d}``: map i's deformation j, seeded by (i, j)."""
    import SimpleITK as sitk

    from nnugen.demo.deformed_labels import deform_label_map

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, file in enumerate(label_files):
        source = sitk.ReadImage(str(file))
        label = sitk.GetArrayFromImage(source)
        for j in range(k):
            image = sitk.GetImageFromArray(deform_label_map(label, np.random.default_rng([i, j])))
            image.CopyInformation(source)
            written.append(out / f"map_{i * k + j:04d}.nii.gz")
            sitk.WriteImage(image, str(written[-1]), useCompression=True)
    return written


def plan_dataset(dataset: int, settings: dict[str, object], log: Path) -> None:
    """The full dataset's nnU-Net plan moved to ``dataset``, preprocessed, then nnugen_plan with ``settings``."""
    preprocessed = Path(os.environ["nnUNet_preprocessed"])
    if dataset != FULL and not any(preprocessed.glob(f"Dataset{dataset}_*/nnUNetPlans_2d")):
        run_logged([cli("nnUNetv2_extract_fingerprint"), "-d", str(dataset), "-np", "2"], log)
        run_logged([cli("nnUNetv2_move_plans_between_datasets"), "-s", str(FULL), "-t", str(dataset), "-sp",
                    "nnUNetPlans", "-tp", "nnUNetPlans"], log)
        folder = next(preprocessed.glob(f"Dataset{dataset}_*"))  # nnUNetv2_preprocess reads dataset.json there
        shutil.copy(Path(os.environ["nnUNet_raw"]) / folder.name / "dataset.json", folder / "dataset.json")
        run_logged([cli("nnUNetv2_preprocess"), "-d", str(dataset), "-plans_name", "nnUNetPlans", "-c", CONFIGURATION,
                    "-np", "2"], log)
    run_logged([cli("nnugen_plan"), "-d", str(dataset), "-c", CONFIGURATION, "--overwrite", *set_arguments(settings)],
               log)


def model_folder(dataset: int, trainer: str) -> Path:
    results = Path(os.environ["nnUNet_results"])
    return results / next(Path(os.environ["nnUNet_raw"]).glob(f"Dataset{dataset}_*")).name / \
        f"{trainer}__nnugenPlans__{CONFIGURATION}"


def train(dataset: int, task: str, seed: int, archive: Path, log: Path, fold: str = "all") -> dict[str, float]:
    """nnugen_train of ``fold`` from scratch; the training log kept in ``archive``; wall and trainer seconds."""
    trainer = TRAINER if task == "baseline" else "NnugenDDPMTrainer"
    shutil.rmtree(model_folder(dataset, trainer), ignore_errors=True)
    start = time.perf_counter()
    run_logged([cli("nnugen_train"), str(dataset), fold, CONFIGURATION, "--task", task, "-device", "cpu", "--seed",
                str(seed), "--no-progress"], log)
    wall = time.perf_counter() - start
    training_log = next((model_folder(dataset, trainer) / f"fold_{fold}").glob("training_log_*.txt"))
    archive.mkdir(parents=True, exist_ok=True)
    shutil.copy(training_log, archive / training_log.name)
    return {"wall_s": round(wall, 1), "training_s": round(float(sum(epoch_seconds(training_log))), 1)}


def predict_and_score(dataset: int, images: Path, labels: Path, out: Path, log: Path,
                      fold: str = "all") -> dict[str, float]:
    """nnUNetv2_predict (no TTA) of ``images`` into ``out``; Dice per label and their mean (nnU-Net's statistics)."""
    from nnugen.evaluation.folder_scores import folder_scores, foreground_mean

    shutil.rmtree(out, ignore_errors=True)
    run_logged([cli("nnUNetv2_predict"), "-d", str(dataset), "-c", CONFIGURATION, "-f", fold, "-tr", TRAINER, "-p",
                "nnugenPlans", "-i", str(images), "-o", str(out), "--disable_tta", "-npp", "0", "-nps", "0",
                "-device", "cpu"], log)
    dice = {name: s["Dice"] for name, s in folder_scores(out, labels, LABELS).items()}
    return {**dice, "mean": foreground_mean(dice)}


def segmenter_settings(args) -> dict[str, object]:
    return {"baseline.training.epochs": args.seg_epochs, "baseline.training.iterations_per_epoch": args.seg_iterations,
            "baseline.training.val_iterations_per_epoch": 2, "baseline.memory.batch_size": args.seg_batch}


def generator_settings(args) -> dict[str, object]:
    """generation_curve_2d's small-denoiser run settings (v + min-SNR-5, no augmentation), label-conditioned."""
    options = SimpleNamespace(augmentation="none", lr=args.lr, features=args.features, batch=args.gen_batch)
    return {**run_settings(options, "v_min_snr", args.gen_iterations, [args.gen_epochs]),
            "ddpm.generation.mode": "label_conditioned"}


def stats(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def markdown(result: dict) -> str:
    lines = ["| real slices N | synthetic | seeds | Dice real | Dice real + synthetic | ratio (per seed) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for n in result["ns"]:
        pairs = [(result["runs"][f"N{n}_real_seed{s}"]["mean"], result["runs"][f"N{n}_mix_seed{s}"]["mean"])
                 for s in result["seeds"] if f"N{n}_real_seed{s}" in result["runs"] and f"N{n}_mix_seed{s}"
                 in result["runs"]]
        if pairs:
            real, mix = zip(*pairs)
            lines.append(f"| {n} | {n * result['k']} | {len(pairs)} | {stats(real)} | {stats(mix)} | "
                         f"{stats([m / r for r, m in pairs])} |")
    lines += ["", "| segmenter on all real slices, scored on | cases | Dice GM | Dice WM | mean |",
              "| --- | --- | --- | --- | --- |"]
    for name, s in result.get("mismatch", {}).items():
        what = ("held-out real slices (their labels)" if name == "real_held_out" else
                f"synthetic images of the N = {name[len('synthetic_N'):]} generator (their conditioning labels)")
        lines.append(f"| {what} | {s['cases']} | {s['grey_matter']:.3f} | {s['white_matter']:.3f} | {s['mean']:.3f} |")
    return "\n".join(lines)


def figure(raw: Path, real: list[str], deformed: Path, synthetic: Path, k: int, path: Path) -> None:
    """Per column (real slice i, its first deformation): real image, real label, deformed label, synthetic image."""
    import matplotlib
    import SimpleITK as sitk

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def read(file: Path) -> np.ndarray:
        return sitk.GetArrayFromImage(sitk.ReadImage(str(file)))[0]

    rows = [("real", [read(raw / "imagesTr" / f"{c}_0000.nii.gz") for c in real]),
            ("its label", [read(raw / "labelsTr" / f"{c}.nii.gz") for c in real]),
            ("deformed label", [read(deformed / f"map_{i * k:04d}.nii.gz") for i in range(len(real))]),
            ("synthetic", [read(synthetic / "imagesTr" / f"case_{i * k:04d}_0000.nii.gz") for i in range(len(real))])]
    fig, axes = plt.subplots(len(rows), len(real), figsize=(len(real) * 1.2, len(rows) * 1.45), squeeze=False)
    for r, (title, images) in enumerate(rows):
        for c, image in enumerate(images):
            low, high = (0, 2) if "label" in title else np.percentile(image, [0.5, 99.5])
            axes[r, c].imshow(image, cmap="viridis" if "label" in title else "gray", vmin=low, vmax=high,
                              origin="lower")
            axes[r, c].axis("off")
        axes[r, 0].set_title(title, fontsize=7, loc="left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("synaug"))
    parser.add_argument("--ns", type=int, nargs="+", default=[2, 4, 8], help="real training slices (nested, <= 8)")
    parser.add_argument("--k", type=int, default=4, help="synthetic cases per real case")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="nnU-Net training seeds")
    parser.add_argument("--seg-epochs", type=int, default=4)
    parser.add_argument("--seg-iterations", type=int, default=50, help="nnU-Net iterations per epoch")
    parser.add_argument("--seg-batch", type=int, default=16, help="nnU-Net's planned batch for these slices")
    parser.add_argument("--gen-epochs", type=int, default=8)
    parser.add_argument("--gen-iterations", type=int, default=40, help="generator iterations per epoch")
    parser.add_argument("--gen-batch", type=int, default=8)
    parser.add_argument("--features", default="[16,32,64,64]", help="denoiser features per stage")
    parser.add_argument("--lr", type=float, default=3e-4, help="the generators' AdamW learning rate (constant)")
    parser.add_argument("--test-per-volume", type=int, default=10, help="held-out slices per held-out volume")
    parser.add_argument("--mismatch-fold", default="all", choices=("all", "0", "1", "2", "3", "4"),
                        help="fold of the segmenter on all real slices: all, or one of nnU-Net's 5 folds (4/5 of "
                             "the slices; its final validation predicts 1/5, not all 378)")
    parser.add_argument("--figure", type=Path, help="PNG of the largest N (default WORK/synthetic_augmentation.png)")
    args = parser.parse_args(argv)
    try:
        check_arguments(args)
        return run(args)
    except (ValueError, RuntimeError) as error:  # bad input, or a CLI that failed (the message names its log)
        print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
        return 1


def check_arguments(args) -> None:
    if sorted(set(args.ns)) != args.ns or not 1 <= args.ns[0] <= args.ns[-1] <= len(POSITIONS):
        raise ValueError(f"--ns: increasing counts between 1 and {len(POSITIONS)}, e.g. 2 4 8")
    for name in ("k", "seg_epochs", "seg_iterations", "seg_batch", "gen_epochs", "gen_iterations", "gen_batch",
                 "test_per_volume"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    if min(args.seeds) < 0 or len(set(args.seeds)) != len(args.seeds):
        raise ValueError("--seeds: distinct seeds >= 0, e.g. 0 1 2")
    if not args.lr > 0:
        raise ValueError("--lr must be > 0")


def run(args) -> int:
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    folders = set_nnunet_folders(work)
    raw_root, log = Path(folders["nnUNet_raw"]), work / "synthetic_augmentation_log.txt"
    raw = write_slice_dataset(raw_root, "axial")
    if not (Path(folders["nnUNet_preprocessed"]) / raw.name / "nnUNetPlans.json").is_file():
        run_logged([cli("nnUNetv2_plan_and_preprocess"), "-d", str(FULL), "-c", CONFIGURATION, "-np", "2", "-npfp",
                    "2"], log)
    path = work / "synthetic_augmentation.json"
    result = json.loads(path.read_text()) if path.is_file() else {"runs": {}, "generators": {}, "mismatch": {}}
    real = real_slices(raw, args.ns[-1])
    test = test_slices(raw, args.test_per_volume)
    result.update({"machine": "2-core CPU (shared), no GPU", "date": time.strftime("%Y-%m-%d"), "ns": args.ns,
                   "k": args.k, "seeds": args.seeds, "real_slices": real, "test_slices": test,
                   "segmenter": segmenter_settings(args), "generator": generator_settings(args)})
    test_images, test_labels = work / "test" / "imagesTs", work / "test" / "labelsTs"
    for case in test:
        for source, target in ((raw / "imagesTs" / f"{case}_0000.nii.gz", test_images / f"{case}_0000.nii.gz"),
                               (raw / "labelsTs" / f"{case}.nii.gz", test_labels / f"{case}.nii.gz")):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)

    def save() -> None:
        result["load_average"] = list(os.getloadavg())
        atomic_write_json(path, result)

    synthetic, planned = {}, set()  # planned: datasets nnugen_plan has written this run's settings for
    for index, n in enumerate(args.ns):  # the generators and their synthetic sets first
        pairs = [(raw / "imagesTr" / f"{c}_0000.nii.gz", raw / "labelsTr" / f"{c}.nii.gz", c) for c in real[:n]]
        write_dataset(raw_root / f"Dataset{REAL + index}_SynAugReal{n}", pairs)
        out = work / "synthetic" / f"N{n}"
        synthetic[n] = out / f"Dataset{SYNTH + index}_SynAugSynth{n}"
        if str(n) not in result["generators"]:
            plan_dataset(REAL + index, {**segmenter_settings(args), **generator_settings(args)}, log)
            planned.add(REAL + index)
            timing = train(REAL + index, "ddpm", 0, work / "runs" / f"generator_N{n}", log)
            maps = work / "deformed" / f"N{n}"
            shutil.rmtree(maps, ignore_errors=True)
            write_deformed_labels([p[1] for p in pairs], args.k, maps)
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            run_logged([cli("nnugen_sample"), str(REAL + index), CONFIGURATION, str(n * args.k), str(out), "-f", "all",
                        "--labels-from", str(maps), "--as-dataset", synthetic[n].name, "--seed", "0", "-device", "cpu",
                        "--no-progress"], log)
            result["generators"][str(n)] = {**timing, "sampling_s": round(time.perf_counter() - start, 1),
                                            "iterations": args.gen_epochs * args.gen_iterations,
                                            "synthetic_cases": n * args.k}
            save()
        synth_pairs = [(p, synthetic[n] / "labelsTr" / f"{p.name[: -len('_0000.nii.gz')]}.nii.gz",
                        f"synth_{p.name[len('case_'):len('case_0000')]}")
                       for p in sorted((synthetic[n] / "imagesTr").glob("case_*_0000.nii.gz"))]
        write_dataset(raw_root / f"Dataset{MIX + index}_SynAugMix{n}", pairs + synth_pairs)
    figure(raw, real, work / "deformed" / f"N{args.ns[-1]}", synthetic[args.ns[-1]], args.k,
           args.figure or work / "synthetic_augmentation.png")

    for seed in args.seeds:  # every N and arm at one seed before the next seed: a cut-short run still pairs them
        for index, n in enumerate(args.ns):
            for arm, dataset in (("real", REAL + index), ("mix", MIX + index)):
                name = f"N{n}_{arm}_seed{seed}"
                if name in result["runs"]:
                    continue
                if dataset not in planned:
                    plan_dataset(dataset, segmenter_settings(args), log)
                    planned.add(dataset)
                timing = train(dataset, "baseline", seed, work / "runs" / name, log)
                scores = predict_and_score(dataset, test_images, test_labels, work / "predictions" / name, log)
                result["runs"][name] = {"n": n, "arm": arm, "seed": seed, **scores, **timing}
                save()
                print(name, result["runs"][name], flush=True)
        if not result["mismatch"]:  # after the first seed: the segmenter on all real training slices
            plan_dataset(FULL, segmenter_settings(args), log)
            timing = train(FULL, "baseline", 0, work / "runs" / "all_real_seed0", log, args.mismatch_fold)
            checks = {"real_held_out": (test_images, test_labels)}
            checks.update({f"synthetic_N{n}": (synthetic[n] / "imagesTr", synthetic[n] / "labelsTr") for n in args.ns})
            for name, (images, labels) in checks.items():
                scores = predict_and_score(FULL, images, labels, work / "predictions" / f"all_real_on_{name}", log,
                                           args.mismatch_fold)
                result["mismatch"][name] = {**scores, "cases": len(list(labels.glob("*.nii.gz")))}
            result["mismatch_segmenter"] = {**timing, "fold": args.mismatch_fold}
            save()
    print(markdown(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
