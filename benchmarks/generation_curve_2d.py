"""Generation quality against CPU training time on real anatomy, in 2D (issue 18, parts 1 and 2).

The data are slices of the augmented MNI152 cases that ``nnugen_demo --real`` builds (nnugen/demo/mni_dataset.py:
one real template at 3 mm under random deformation, bias field and noise): 12 training volumes and 4 held-out ones,
sliced along one axis (``--orientation axial`` or ``coronal``), keeping the slices whose brain area is at least half
the largest of their volume (the brain's middle, where a slice is a brain picture and not a rim). Each slice is one
nnU-Net case (1 x Y x X). Everything runs through the real CLIs:

1. ``nnUNetv2_plan_and_preprocess -c 2d``; ``nnugen_train --task baseline`` (fold all, a short budget): the trained
   nnU-Net whose encoder gives the offline features of the Fréchet distance and the Gaussian MMD.
2. Per objective and training seed: ``nnugen_plan --set`` (the objective, a small denoiser, the budget and
   ``training.keep_epochs`` log-spaced), ``nnugen_train --task ddpm --seed S``, then at every kept checkpoint
   ``nnugen_sample -chk checkpoint_epoch_NNNN.pth`` of ``--samples`` slices (seed 0, the plan's sampler) and the
   scores: Fréchet distance and MMD of the samples' features against the held-out real slices, and mean pairwise
   MS-SSIM among the samples (diversity; the real slices' is the reference).
3. The reference: the same distances between two sets of real slices of the same size (held-out against training
   slices), over ``--resamplings`` random draws: mean and standard deviation, so "close" has a scale.
4. A PNG grid per objective (seed 0, last checkpoint): samples above real held-out slices.

Training time is the trainer's own epoch times (its log), summed to each kept epoch. Results go to
WORK/curve_<orientation>.json (rewritten after each finished run, so an interrupted run keeps what it measured; a
rerun skips finished trainings, ``--rescore`` scores their samples again) and print as a Markdown table.

``--external DIR`` scores checkpoints trained elsewhere with the same settings (``OBJECTIVE_EEEE.pth``, e.g. trained on
a GPU with ``--external-iterations`` per epoch): they are sampled and scored here, in their own ``--work-dir``.

    nnUNet_def_n_proc=2 nnUNet_n_proc_DA=1 python benchmarks/generation_curve_2d.py --work-dir W \
        --objectives eps v_min_snr rflow --seeds 0 1 --epochs 16 --iterations 32
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

from nnugen.atomic_files import atomic_write_json
from nnugen.demo.commands import cli, run_logged, set_nnunet_folders

DATASETS = {"axial": (981, "GenCurveAxial"), "coronal": (982, "GenCurveCoronal")}
AXES = {"axial": 0, "coronal": 1}  # array axes of the (z, y, x) volumes
CONFIGURATION = "2d"
OBJECTIVES = {  # nnugen_plan settings of the ddpm task per objective
    "eps": {"ddpm.diffusion.model_output": "eps"},
    "v": {"ddpm.diffusion.model_output": "v"},
    "v_min_snr": {"ddpm.diffusion.model_output": "v", "ddpm.diffusion.loss_weighting": "min_snr"},
    "eps_min_snr": {"ddpm.diffusion.model_output": "eps", "ddpm.diffusion.loss_weighting": "min_snr"},
    "rflow": {"ddpm.diffusion.process": "rflow", "ddpm.diffusion.loss_weighting": "uniform"},
}


def write_slice_dataset(raw_root: Path, orientation: str, train_volumes: int = 12, test_volumes: int = 4) -> Path:
    """``Dataset98X_GenCurve<Orientation>``: slices of the training volumes in imagesTr / labelsTr, slices of the
    held-out volumes in imagesTs / labelsTs (same cases as write_mni_dataset's, seed 0)."""
    from nnugen.demo.mni_dataset import write_mni_slice_dataset

    dataset_id, name = DATASETS[orientation]
    return write_mni_slice_dataset(raw_root, dataset_id, name, train_volumes, test_volumes, axis=AXES[orientation])


def log_spaced_epochs(epochs: int) -> list[int]:
    """1, 2, 4, ... up to ``epochs`` (which is always included)."""
    kept = [2**k for k in range(int(np.log2(epochs)) + 1)]
    return sorted(set(kept) | {epochs})


def epoch_seconds(training_log: Path) -> list[float]:
    """The trainer's "Epoch time: X s" lines, in order."""
    return [float(m) for m in re.findall(r"Epoch time: ([0-9.]+) s", training_log.read_text(encoding="utf-8"))]


SAMPLED_IMAGES = "case_*_0000.nii.gz"
"""nnugen_sample's images; its label maps (``case_0000.nii.gz`` ...) would match ``*_0000.nii.gz`` too."""


def read_images(folder: Path, pattern: str = "*_0000.nii.gz") -> np.ndarray:
    """All images of ``folder`` matching ``pattern``, centre-cropped to the smallest shape: (N, 1, 1, Y, X)."""
    import SimpleITK as sitk

    from nnugen.evaluation.generation_evaluation import centre_crop

    arrays = [sitk.GetArrayFromImage(sitk.ReadImage(str(p))).astype(np.float32)[None]
              for p in sorted(folder.glob(pattern))]
    return centre_crop(arrays)


class Scorer:
    """Features of the trained nnU-Net's encoder, real reference sets and their resampled distances."""

    def __init__(self, baseline_folder: Path, real_test: np.ndarray, real_train: np.ndarray, samples: int,
                 resamplings: int) -> None:
        import torch

        from nnugen.evaluation.encoder_features import EncoderFeatures
        from nnugen.evaluation.generation_evaluation import encoder_features

        self.features = encoder_features(EncoderFeatures(baseline_folder), CONFIGURATION)
        self.shape = real_test.shape[-2:]
        self.data_range = float(real_test.max() - real_test.min())
        self.real_test = real_test
        self.test_features = torch.from_numpy(np.asarray(self.features(real_test), np.float64))
        self.train_features = torch.from_numpy(np.asarray(self.features(self.crop(real_train)), np.float64))
        self.samples, self.rng = samples, np.random.default_rng(0)
        self.reference = self.real_vs_real(resamplings)

    def crop(self, images: np.ndarray) -> np.ndarray:
        from nnugen.evaluation.generation_evaluation import centre_crop

        return centre_crop([*images, np.zeros((1, 1, *self.shape), np.float32)])[:-1]

    def distances(self, a, b) -> dict[str, float]:
        from nnugen.evaluation.feature_distances import frechet_distance, gaussian_mmd

        return {"frechet": frechet_distance(a, b), "mmd": gaussian_mmd(a, b)}

    def real_vs_real(self, resamplings: int) -> dict:
        import torch

        from nnugen.evaluation.diversity import mean_pairwise_ms_ssim

        n = min(self.samples, len(self.test_features), len(self.train_features))
        draws = []
        for _ in range(resamplings):
            a = self.rng.choice(len(self.test_features), n, replace=False)
            b = self.rng.choice(len(self.train_features), n, replace=False)
            draws.append(self.distances(self.test_features[a], self.train_features[b]))
        subset = self.real_test[self.rng.choice(len(self.real_test), n, replace=False)]
        return {"n": n, "resamplings": resamplings,
                **{f"{k}_{stat}": float(getattr(np, stat)([d[k] for d in draws]))
                   for k in ("frechet", "mmd") for stat in ("mean", "std")},
                "ms_ssim_among_real": mean_pairwise_ms_ssim(torch.from_numpy(subset[:, :, 0]), self.data_range)}

    def score(self, sampled: np.ndarray) -> dict[str, float]:
        import torch

        from nnugen.evaluation.diversity import mean_pairwise_ms_ssim

        sampled = self.crop(sampled)
        vectors = torch.from_numpy(np.asarray(self.features(sampled), np.float64))
        n = min(len(vectors), len(self.test_features))
        test = self.test_features[self.rng.choice(len(self.test_features), n, replace=False)]
        return {**self.distances(test, vectors[:n]), "samples": int(n),
                "ms_ssim_among_samples": mean_pairwise_ms_ssim(torch.from_numpy(sampled[:, :, 0]), self.data_range)}


def run_settings(args, objective: str, iterations: int, kept: list[int]) -> dict[str, object]:
    """The ddpm task's settings of one run: the objective, a small denoiser, the budget and the kept epochs."""
    return {**OBJECTIVES[objective], "ddpm.training.augmentation": args.augmentation, "ddpm.training.epochs": max(kept),
            "ddpm.training.iterations_per_epoch": iterations, "ddpm.training.val_iterations_per_epoch": 1,
            "ddpm.training.initial_lr": args.lr, "ddpm.training.preview_every": max(kept),
            "ddpm.training.keep_epochs": str(kept).replace(" ", ""),
            "ddpm.denoiser.features_per_stage": args.features, "ddpm.denoiser.attention_stages": "[]",
            "ddpm.memory.batch_size": args.batch}


def model_folder(dataset: int) -> Path:
    results = Path(os.environ["nnUNet_results"])
    return next(results.glob(f"Dataset{dataset}_*")) / f"NnugenDDPMTrainer__nnugenPlans__{CONFIGURATION}"


def score_checkpoints(args, dataset: int, name: str, checkpoints: list[dict], scorer: Scorer, work: Path,
                      log: Path) -> list[dict]:
    """Sample ``--samples`` slices from each kept checkpoint of the model folder (``checkpoints``: epoch,
    iterations, training_s) and score them."""
    points = []
    for point in checkpoints:
        out = work / "samples" / name / f"epoch_{point['epoch']:04d}"
        if not (args.rescore and (out / "sampling.json").is_file()):  # --rescore: the samples already drawn
            shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            run_logged([cli("nnugen_sample"), str(dataset), CONFIGURATION, str(args.samples), str(out), "-f", "all",
                        "-chk", f"checkpoint_epoch_{point['epoch']:04d}.pth", "--seed", "0", "-device", "cpu",
                        "--no-progress"], log)
            point = {**point, "sampling_s": round(time.perf_counter() - start, 1)}
        points.append({**point, **scorer.score(read_images(out, SAMPLED_IMAGES))})
        print(name, points[-1], flush=True)
    return points


def run_label(args, objective: str) -> str:
    """The objective, with the augmentation where it is not nnU-Net's (the runs of session 10 trained with it)."""
    return objective if args.augmentation == "nnunet" else f"{objective}_aug-{args.augmentation}"


def train_and_score(args, dataset: int, objective: str, seed: int, scorer: Scorer, work: Path, log: Path) -> dict:
    folder = model_folder(dataset)
    name = f"{run_label(args, objective)}_seed{seed}"
    archive = work / "runs" / name
    if (archive / "run.json").is_file():
        run = json.loads((archive / "run.json").read_text())
        if args.rescore:
            kept = [{k: p[k] for k in ("epoch", "iterations", "training_s", "sampling_s")} for p in run["points"]]
            run["points"] = score_checkpoints(args, dataset, run_name(run), kept, scorer, work, log)
            atomic_write_json(archive / "run.json", run)
        return run
    kept = log_spaced_epochs(args.epochs)
    settings = run_settings(args, objective, args.iterations, kept)
    shutil.rmtree(folder, ignore_errors=True)
    run_logged([cli("nnugen_plan"), "-d", str(dataset), "-c", CONFIGURATION, "--overwrite",
                *set_arguments({**baseline_settings(args), **settings})], log)
    run_logged([cli("nnugen_train"), str(dataset), "all", CONFIGURATION, "--task", "ddpm", "-device", "cpu",
                "--seed", str(seed), "--no-progress"], log)
    fold = folder / "fold_all"
    seconds = np.cumsum(epoch_seconds(next(fold.glob("training_log_*.txt"))))
    checkpoints = [{"epoch": e, "iterations": e * args.iterations, "training_s": round(float(seconds[e - 1]), 1)}
                   for e in kept]
    points = score_checkpoints(args, dataset, name, checkpoints, scorer, work, log)
    run = {"objective": objective, "augmentation": args.augmentation, "seed": seed, "device": "cpu", "name": name,
           "settings": settings, "points": points}
    archive.mkdir(parents=True, exist_ok=True)
    for name in [*fold.glob("training_log_*.txt"), fold / "debug.json", fold / "progress.png"]:
        if name.is_file():
            shutil.copy(name, archive / name.name)
    atomic_write_json(archive / "run.json", run)
    return run


def score_external(args, dataset: int, objective: str, scorer: Scorer, work: Path, log: Path) -> dict:
    """Checkpoints trained elsewhere (``--external DIR``: ``OBJECTIVE_EEEE.pth``, e.g. on a GPU by
    nnugen_train with this script's settings and ``--external-iterations`` per epoch), sampled and scored here."""
    files = sorted(args.external.glob(f"{objective}_[0-9][0-9][0-9][0-9].pth"))
    epochs = [int(f.stem.rsplit("_", 1)[1]) for f in files]
    settings = run_settings(args, objective, args.external_iterations, epochs)
    folder = model_folder(dataset)
    name = f"{run_label(args, objective)}_{args.external_label}"
    checkpoints = [{"epoch": e, "iterations": e * args.external_iterations, "training_s": None} for e in epochs]
    run = {"objective": objective, "augmentation": args.augmentation, "seed": 0, "device": args.external_label,
           "name": name, "settings": settings}
    if args.rescore:
        return {**run, "points": score_checkpoints(args, dataset, name, checkpoints, scorer, work, log)}
    shutil.rmtree(folder, ignore_errors=True)
    run_logged([cli("nnugen_plan"), "-d", str(dataset), "-c", CONFIGURATION, "--overwrite",
                *set_arguments({**baseline_settings(args), **settings})], log)
    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / folder.parent.name
    (folder / "fold_all").mkdir(parents=True)
    shutil.copy(preprocessed / "nnugenPlans.json", folder / "plans.json")
    shutil.copy(preprocessed / "dataset.json", folder / "dataset.json")
    for file, epoch in zip(files, epochs):
        shutil.copy(file, folder / "fold_all" / f"checkpoint_epoch_{epoch:04d}.pth")
    return {**run, "points": score_checkpoints(args, dataset, name, checkpoints, scorer, work, log)}


def baseline_settings(args) -> dict[str, object]:
    """The baseline's short budget, repeated in every ``nnugen_plan --overwrite`` so the plan keeps it."""
    return {"baseline.training.epochs": args.baseline_epochs, "baseline.training.iterations_per_epoch": 50,
            "baseline.training.val_iterations_per_epoch": 5}


def set_arguments(settings: dict[str, object]) -> list[str]:
    return [a for k, v in settings.items() for a in ("--set", f"{k}={v}")]


def run_name(run: dict) -> str:
    return run.get("name", f"{run['objective']}_seed{run['seed']}")  # runs archived before names were recorded


def grid_png(runs: list[dict], work: Path, real: np.ndarray, path: Path, per_row: int = 8) -> None:
    """One row block per run of the first seed (last kept epoch): ``per_row`` samples; the last block real
    slices."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = []
    for run in runs:
        if run["seed"] != min(r["seed"] for r in runs):
            continue
        last = run["points"][-1]["epoch"]
        images = read_images(work / "samples" / run_name(run) / f"epoch_{last:04d}", SAMPLED_IMAGES)
        blocks.append((f"{run_name(run)}, {run['points'][-1]['iterations']} iterations", images[:per_row, 0, 0]))
    blocks.append(("real (held out)", real[:per_row, 0, 0]))
    low, high = np.percentile(real, [0.5, 99.5])
    figure, axes = plt.subplots(len(blocks), per_row, figsize=(per_row * 1.2, len(blocks) * 1.35))
    for row, (title, images) in enumerate(blocks):
        for column in range(per_row):
            axis = axes[row, column]
            axis.axis("off")
            if column < len(images):
                axis.imshow(images[column], cmap="gray", vmin=low, vmax=high, origin="lower")
        axes[row, 0].set_title(title, fontsize=7, loc="left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def markdown(result: dict) -> str:
    ref = result["reference"]
    lines = [f"real vs real ({ref['n']} vs {ref['n']} slices, {ref['resamplings']} draws): Fréchet "
             f"{ref['frechet_mean']:.3f} ± {ref['frechet_std']:.3f}, MMD² {ref['mmd_mean']:.4f} ± {ref['mmd_std']:.4f},"
             f" MS-SSIM among real {ref['ms_ssim_among_real']:.3f}", "",
             "| objective | augmentation | seed | trained on | iterations | training s | Fréchet | MMD² "
             "| MS-SSIM among samples |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for run in result["runs"]:
        for p in run["points"]:
            seconds = "-" if p["training_s"] is None else f"{p['training_s']:.0f}"
            lines.append(f"| {run['objective']} | {run.get('augmentation', 'nnunet')} | {run['seed']} | "
                         f"{run.get('device', 'cpu')} | {p['iterations']} | "
                         f"{seconds} | {p['frechet']:.3f} | {p['mmd']:.4f} | {p['ms_ssim_among_samples']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("gencurve"))
    parser.add_argument("--orientation", choices=tuple(DATASETS), default="axial")
    parser.add_argument("--objectives", nargs="+", choices=tuple(OBJECTIVES), default=["eps", "v", "rflow"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--augmentation", choices=("none", "mirror", "nnunet"), default="none",
                        help="training.augmentation of the generators (session 10's runs: nnunet)")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=32, help="training iterations per epoch")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--features", default="[16,32,64,64]", help="denoiser features per stage")
    parser.add_argument("--lr", type=float, default=3e-4, help="AdamW learning rate (constant), the same for all")
    parser.add_argument("--baseline-epochs", type=int, default=4, help="epochs (of 50 iterations) of the feature net")
    parser.add_argument("--samples", type=int, default=64, help="slices sampled per kept checkpoint")
    parser.add_argument("--resamplings", type=int, default=20)
    parser.add_argument("--prepare-only", action="store_true", help="dataset, preprocessing and baseline, then stop")
    parser.add_argument("--rescore", action="store_true", help="score the samples already drawn again")
    parser.add_argument("--external", type=Path, help="score checkpoints trained elsewhere (OBJECTIVE_EEEE.pth)")
    parser.add_argument("--external-iterations", type=int, default=256, help="their iterations per epoch")
    parser.add_argument("--external-label", default="gpu", help="where they were trained, for the table")
    args = parser.parse_args()
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    folders = set_nnunet_folders(work)
    raw = write_slice_dataset(Path(folders["nnUNet_raw"]), args.orientation)
    dataset = DATASETS[args.orientation][0]
    log = work / f"curve_{args.orientation}_log.txt"
    if not (Path(folders["nnUNet_preprocessed"]) / raw.name / "nnUNetPlans.json").is_file():
        run_logged([cli("nnUNetv2_plan_and_preprocess"), "-d", str(dataset), "-c", CONFIGURATION, "-np", "2",
                    "-npfp", "2"], log)
    baseline = Path(folders["nnUNet_results"]) / raw.name / f"NnugenBaselineTrainer__nnugenPlans__{CONFIGURATION}"
    if not (baseline / "fold_all" / "checkpoint_final.pth").is_file():
        run_logged([cli("nnugen_plan"), "-d", str(dataset), "-c", CONFIGURATION, "--overwrite",
                    *set_arguments(baseline_settings(args))], log)
        run_logged([cli("nnugen_train"), str(dataset), "all", CONFIGURATION, "--task", "baseline", "-device", "cpu",
                    "--seed", "0", "--no-progress"], log)
    if args.prepare_only:
        return
    real_test = read_images(raw / "imagesTs")
    scorer = Scorer(baseline / "fold_all", real_test, read_images(raw / "imagesTr"), args.samples, args.resamplings)
    result = {"machine": "2-core CPU (shared)", "date": time.strftime("%Y-%m-%d"), "orientation": args.orientation,
              "training_slices": len(list((raw / "labelsTr").iterdir())), "held_out_slices": len(real_test),
              "slice_shape": list(real_test.shape[-2:]), "epochs": args.epochs, "iterations": args.iterations,
              "batch": args.batch, "features": args.features, "lr": args.lr, "reference": scorer.reference, "runs": []}
    if args.external is not None:
        result["external"] = {"folder": str(args.external), "iterations_per_epoch": args.external_iterations}
    for seed in args.seeds:  # every objective at seed 0 first: a cut-short run still compares them
        for objective in args.objectives:
            run = (score_external(args, dataset, objective, scorer, work, log) if args.external is not None
                   else train_and_score(args, dataset, objective, seed, scorer, work, log))
            result["runs"].append(run)
            result["load_average"] = list(os.getloadavg())
            atomic_write_json(work / f"curve_{args.orientation}.json", result)
            grid_png(result["runs"], work, real_test, work / f"samples_{args.orientation}.png")
    print(markdown(result))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
