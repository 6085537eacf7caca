"""Generation on the demo phantoms through the real CLIs, with small budgets: the numbers check the machinery, not
generation quality.

1. 3D phantoms (``--shape``, 12 training + 4 held-out cases), planned and preprocessed by nnU-Net.
2. ``NnugenBaselineTrainer`` on the real cases (fold ``all``): the Dice reference, and the source of offline features
   (its encoder) for the Fréchet distance and MMD and of the autoencoder's perceptual loss.
3. ``NnugenAutoencoderTrainer`` (fold all): PSNR / SSIM of its reconstructions of the 4 held-out cases, in [-1, 1].
4. ``NnugenDDPMTrainer`` (joint image + label, fold all), then ``nnugen_sample --as-dataset`` of ``--synthetic``
   cases.
5. Diversity: mean pairwise MS-SSIM among 8 synthetic and among 8 real images. Distances: Fréchet distance and
   Gaussian MMD between encoder features of 8 real (the held-out 4 + 4 training cases) and 8 synthetic images,
   next to the same distances between those real cases and the 8 other real ones.
6. The Dice that matters: ``NnugenBaselineTrainer`` with the same budget on real only, real + synthetic and
   synthetic only, each predicted by ``nnUNetv2_predict`` on the same 4 real held-out cases.
7. One DDPM training step (the planned denoiser, batch and patch) in a fresh process each: median time per step
   and peak RSS, with and without activation checkpointing, in fp32 and under CPU bf16 autocast.

Results go to WORK/generation_benchmark.json; the table is printed as Markdown. A rerun in the same WORK folder skips
the preprocessing, training, sampling and step timing that an earlier run finished.

    python benchmarks/generation_benchmark.py --work-dir /tmp/genbench [--epochs 4] [--iterations 20]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from nnugen.atomic_files import atomic_write_json
from nnugen.demo.commands import cli, run_logged, set_nnunet_folders
from nnugen.demo.evaluation import dice_and_hd95_per_class
from nnugen.demo.mni_dataset import write_mni_dataset
from nnugen.demo.phantom import PhantomSpec, write_phantom_dataset
from nnugen.evaluation.generation_evaluation import centre_crop

REAL, SYNTHETIC, MIXED = 985, 986, 987
NAMES = {REAL: "GenBenchReal", SYNTHETIC: "GenBenchSynthetic", MIXED: "GenBenchMixed"}
CONFIGURATION = "3d_fullres"


def dataset_folder(root: str, dataset: int) -> Path:
    return Path(root) / f"Dataset{dataset}_{NAMES[dataset]}"


def timed(command: list[str], log: Path, times: dict, key: str) -> None:
    start = time.perf_counter()
    run_logged(command, log)
    times[key] = round(time.perf_counter() - start, 1)


def preprocess(dataset: int, log: Path, times: dict) -> None:
    if (Path(os.environ["nnUNet_preprocessed"]) / f"Dataset{dataset}_{NAMES[dataset]}" / "nnUNetPlans.json").is_file():
        return  # done by an earlier, interrupted run of this benchmark
    timed([cli("nnUNetv2_plan_and_preprocess"), "-d", str(dataset), "-c", CONFIGURATION, "-np", "2", "-npfp", "2",
           "--verify_dataset_integrity"], log, times, f"preprocess_{dataset}")


def plan(dataset: int, settings: dict[str, object], log: Path) -> None:
    sets = [a for key, value in settings.items() for a in ("--set", f"{key}={value}")]
    run_logged([cli("nnugen_plan"), "-d", str(dataset), "-c", CONFIGURATION, *sets], log)


def budget(task: str, epochs: int, iterations: int) -> dict[str, object]:
    return {f"{task}.training.epochs": epochs, f"{task}.training.iterations_per_epoch": iterations,
            f"{task}.training.val_iterations_per_epoch": 2, f"{task}.training.preview_every": epochs}


def train(dataset: int, task: str, log: Path, times: dict) -> None:
    trainer = {"baseline": "NnugenBaselineTrainer", "autoencoder": "NnugenAutoencoderTrainer",
               "ddpm": "NnugenDDPMTrainer"}[task]
    if (model_folder(os.environ["nnUNet_results"], dataset, trainer) / "checkpoint_final.pth").is_file():
        return  # trained by an earlier, interrupted run of this benchmark
    timed([cli("nnugen_train"), str(dataset), "all", CONFIGURATION, "--task", task, "-device", "cpu", "--seed", "0"],
          log, times, f"train_{task}_{dataset}")


def model_folder(results: str, dataset: int, trainer: str) -> Path:
    return dataset_folder(results, dataset) / f"{trainer}__nnugenPlans__{CONFIGURATION}" / "fold_all"


def predict_dice(results: str, raw: Path, dataset: int, work: Path, log: Path) -> dict[str, float]:
    output = work / "predictions" / str(dataset)
    shutil.rmtree(output, ignore_errors=True)
    run_logged([cli("nnUNetv2_predict"), "-d", str(dataset), "-c", CONFIGURATION, "-f", "all", "-tr",
                "NnugenBaselineTrainer", "-p", "nnugenPlans", "-i", str(raw / "imagesTs"), "-o", str(output),
                "-device", "cpu", "--disable_tta", "-npp", "0", "-nps", "0"], log)
    return dice_and_hd95_per_class(output, raw / "labelsTs", dataset_labels(raw))[0]


def dataset_labels(folder: Path) -> dict[str, int]:
    """The ``labels`` of the dataset.json in ``folder`` (a raw or a preprocessed dataset)."""
    return json.loads((folder / "dataset.json").read_text())["labels"]


def read(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path))).astype(np.float32)


def write_mixed_dataset(raw_root: Path, real: Path, synthetic: Path) -> None:
    """Real training cases + synthetic ones as one raw dataset, with the real held-out cases as imagesTs."""
    mixed = dataset_folder(str(raw_root), MIXED)
    shutil.rmtree(mixed, ignore_errors=True)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (mixed / sub).mkdir(parents=True)
    for source, subs in ((real, ("imagesTr", "labelsTr", "imagesTs", "labelsTs")),
                         (synthetic, ("imagesTr", "labelsTr"))):
        for sub in subs:
            for path in (source / sub).iterdir():
                shutil.copy(path, mixed / sub / path.name)
    dataset_json = json.loads((real / "dataset.json").read_text())
    dataset_json.update(name=NAMES[MIXED], numTraining=len(list((mixed / "labelsTr").iterdir())))
    atomic_write_json(mixed / "dataset.json", dataset_json)


def synthetic_only_dataset(raw_root: Path, real: Path, sampled: Path) -> Path:
    """The sampled dataset moved into nnUNet_raw, with the real held-out cases as imagesTs / labelsTs."""
    target = dataset_folder(str(raw_root), SYNTHETIC)
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(sampled, target)
    for sub in ("imagesTs", "labelsTs"):
        shutil.copytree(real / sub, target / sub)
    return target


def reconstruction_metrics(preprocessed: str, results: str, real: Path) -> dict[str, float]:
    import torch

    from nnugen.config import section_of
    from nnugen.evaluation.encoder_features import nnunet_normalised
    from nnugen.evaluation.reconstruction import psnr, ssim
    from nnugen.models.autoencoder_files import load_autoencoder
    from nnugen.models.intensity_map import IntensityMap

    plans = json.loads((dataset_folder(preprocessed, REAL) / "nnugenPlans.json").read_text())
    intensity = IntensityMap(section_of(plans["configurations"][CONFIGURATION]).intensity)
    autoencoder, _ = load_autoencoder(model_folder(results, REAL, "NnugenAutoencoderTrainer"))
    divisor = np.array(autoencoder.downsampling)
    images = [nnunet_normalised(read(p)[None], plans, CONFIGURATION) for p in sorted((real / "imagesTs").iterdir())]
    crop = centre_crop(images)
    crop = crop[(..., *(slice(0, int(n) // int(d) * int(d)) for n, d in zip(crop.shape[2:], divisor)))]
    x = intensity.to_model(torch.from_numpy(crop))
    with torch.no_grad():
        reconstruction = autoencoder.decode(autoencoder.encode(x).mode()).clamp(-1, 1)
    return {"psnr_db": float(psnr(reconstruction, x, 2.0).mean()), "ssim": float(ssim(reconstruction, x, 2.0).mean()),
            "cases": len(images), "shape": list(crop.shape[2:])}


def distribution_metrics(preprocessed: str, results: str, real: Path, synthetic: Path) -> dict[str, float]:
    import torch

    from nnugen.evaluation.diversity import mean_pairwise_ms_ssim
    from nnugen.evaluation.encoder_features import EncoderFeatures, nnunet_normalised
    from nnugen.evaluation.feature_distances import frechet_distance, gaussian_mmd

    plans = json.loads((dataset_folder(preprocessed, REAL) / "nnugenPlans.json").read_text())
    real_files = sorted((real / "imagesTs").iterdir()) + sorted((real / "imagesTr").iterdir())
    real_images = [read(p) for p in real_files[:16]]
    synthetic_images = [read(p) for p in sorted((synthetic / "imagesTr").iterdir())[:8]]
    everything = centre_crop([a[None] for a in real_images + synthetic_images])
    first, fake = everything[:8], everything[16:]
    data_range = float(first.max() - first.min())
    normalised = torch.from_numpy(np.stack([nnunet_normalised(a, plans, CONFIGURATION) for a in everything]))
    encoder = EncoderFeatures(model_folder(results, REAL, "NnugenBaselineTrainer"))
    features = encoder.features(normalised)
    a, b, s = features[:8], features[8:16], features[16:]
    return {
        "ms_ssim_among_synthetic": mean_pairwise_ms_ssim(torch.from_numpy(fake), data_range),
        "ms_ssim_among_real": mean_pairwise_ms_ssim(torch.from_numpy(first), data_range),
        "frechet_real_vs_synthetic": frechet_distance(a, s), "frechet_real_vs_real": frechet_distance(a, b),
        "mmd_real_vs_synthetic": gaussian_mmd(a, s), "mmd_real_vs_real": gaussian_mmd(a, b),
        "images_per_set": 8, "feature_dimensions": int(features.shape[1]), "shape": list(everything.shape[2:]),
    }


def measure_step(plans_file: str, checkpointing: bool, autocast: bool, steps: int) -> dict[str, float]:
    """In this (fresh) process: median seconds per DDPM training step and the peak RSS."""
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnugen.config import section_of
    from nnugen.models.image_generator import ImageGenerator

    torch.set_num_threads(2)
    torch.manual_seed(0)
    configuration = PlansManager(json.loads(Path(plans_file).read_text())).get_configuration(CONFIGURATION)
    settings = section_of(configuration.configuration).task("ddpm")
    settings = replace(settings, memory=replace(settings.memory, activation_checkpointing=checkpointing))
    channels = len(configuration.configuration["normalization_schemes"])
    classes = len(dataset_labels(Path(plans_file).parent))
    generator = ImageGenerator.from_settings(settings, channels, classes, configuration.patch_size).train()
    optimizer = torch.optim.AdamW(generator.parameters(), 1e-4)
    generated = ImageGenerator.channels(channels, classes, settings.generation.mode)[0]
    x0 = torch.rand(settings.memory.batch_size, generated, *configuration.patch_size) * 2 - 1
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = generator(x0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= 2:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds_per_step": statistics.median(times), "peak_rss_mb": peak, "rss_before_steps_mb": rss_before,
            "batch": settings.memory.batch_size, "patch": list(configuration.patch_size),
            "features_per_stage": list(settings.denoiser.features_per_stage)}


def step_table(plans_file: Path, steps: int) -> list[dict]:
    rows = []
    for checkpointing in (False, True):
        for autocast in (False, True):
            output = subprocess.run([sys.executable, __file__, "--measure-step", str(plans_file), "--steps", str(steps),
                                     *(["--checkpointing"] if checkpointing else []),
                                     *(["--autocast"] if autocast else [])],
                                    capture_output=True, text=True, check=True).stdout
            rows.append({"activation_checkpointing": checkpointing, "cpu_bf16_autocast": autocast,
                         **json.loads(output.strip().splitlines()[-1])})
    return rows


def markdown(result: dict) -> str:
    rec, dist, dice = result["reconstruction"], result["distribution"], result["dice"]
    lines = ["| measure | synthetic / model | real reference |", "| --- | --- | --- |",
             f"| autoencoder PSNR on {rec['cases']} held-out cases, [-1, 1] | {rec['psnr_db']:.2f} dB | — |",
             f"| autoencoder SSIM on {rec['cases']} held-out cases | {rec['ssim']:.3f} | — |",
             f"| MS-SSIM among 8 images (lower = more diverse) | {dist['ms_ssim_among_synthetic']:.3f} | "
             f"{dist['ms_ssim_among_real']:.3f} |",
             f"| Fréchet distance, 8 vs 8, encoder features | {dist['frechet_real_vs_synthetic']:.2f} | "
             f"{dist['frechet_real_vs_real']:.2f} |",
             f"| Gaussian MMD², 8 vs 8, encoder features | {dist['mmd_real_vs_synthetic']:.4f} | "
             f"{dist['mmd_real_vs_real']:.4f} |", "",
             "| nnU-Net trained on | " + " | ".join(dice["real"]) + " | mean |",
             "| --- |" + " --- |" * (len(dice["real"]) + 1)]
    for name, scores in dice.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:.3f}" for v in scores.values()) +
                     f" | {np.mean(list(scores.values())):.3f} |")
    lines += ["", "| activation checkpointing | CPU bf16 autocast | s / step | peak RSS (MB) |",
              "| --- | --- | --- | --- |"]
    for row in result["steps"]:
        lines.append(f"| {'on' if row['activation_checkpointing'] else 'off'} | "
                     f"{'on' if row['cpu_bf16_autocast'] else 'off'} | {row['seconds_per_step']:.2f} | "
                     f"{row['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("genbench"))
    parser.add_argument("--data", choices=("phantom", "mni"), default="phantom",
                        help="3D phantoms, or the augmented MNI152 template that ships with nilearn (real anatomy)")
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 32, 32), help="phantom size")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--synthetic", type=int, default=12, help="synthetic cases (at least 8)")
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per configuration")
    parser.add_argument("--measure-step", metavar="PLANS", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--autocast", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_step:
        print(json.dumps(measure_step(args.measure_step, args.checkpointing, args.autocast, args.steps)))
        return
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    folders = set_nnunet_folders(work)
    raw_root, preprocessed, results = Path(folders["nnUNet_raw"]), folders["nnUNet_preprocessed"], \
        folders["nnUNet_results"]
    log, times = work / "generation_benchmark_log.txt", {}
    start, load_at_start = time.perf_counter(), list(os.getloadavg())  # the machine is shared: say how busy it was

    real = dataset_folder(str(raw_root), REAL)
    if not (real / "dataset.json").is_file():
        if args.data == "mni":
            write_mni_dataset(raw_root, REAL, NAMES[REAL], 12, 4, seed=0)
        else:
            write_phantom_dataset(raw_root, REAL, NAMES[REAL], 12, 4, PhantomSpec(shape=tuple(args.shape)), seed=0)
    preprocess(REAL, log, times)
    small = "[" + ",".join(str(16 * 2**s) for s in range(4)) + "]"
    perceptual = model_folder(results, REAL, "NnugenBaselineTrainer")
    plan(REAL, {**budget("baseline", args.epochs, args.iterations),
                **budget("autoencoder", max(1, args.epochs // 2), args.iterations),
                "autoencoder.autoencoder.perceptual_network": perceptual,
                "autoencoder.autoencoder.adversarial_warmup_iterations": args.iterations,
                **budget("ddpm", args.epochs, args.iterations), "ddpm.generation.mode": "joint"}, log)
    plans_file = dataset_folder(preprocessed, REAL) / "nnugenPlans.json"
    steps_file = work / "step_table.json"
    if not steps_file.is_file():  # the planned denoiser, before the smaller one is set for training
        atomic_write_json(steps_file, step_table(plans_file, args.steps))
    steps = json.loads(steps_file.read_text())
    plan(REAL, {"ddpm.denoiser.features_per_stage": small, "ddpm.denoiser.attention_stages": "[]"}, log)
    for task in ("baseline", "autoencoder", "ddpm"):
        train(REAL, task, log, times)
    sampled = work / "synthetic"
    if not (sampled / f"Dataset{SYNTHETIC}_{NAMES[SYNTHETIC]}" / "dataset.json").is_file():
        shutil.rmtree(sampled, ignore_errors=True)
        timed([cli("nnugen_sample"), str(REAL), CONFIGURATION, str(args.synthetic), str(sampled), "-f", "all",
               "--as-dataset", f"Dataset{SYNTHETIC}_{NAMES[SYNTHETIC]}", "--seed", "0", "-device", "cpu"], log,
              times, "sample")
    synthetic = synthetic_only_dataset(raw_root, real, sampled / f"Dataset{SYNTHETIC}_{NAMES[SYNTHETIC]}")
    write_mixed_dataset(raw_root, real, synthetic)

    result = {"machine": "2-core CPU (shared)", "data": args.data, "shape": list(args.shape), "epochs": args.epochs,
              "iterations": args.iterations, "synthetic_cases": args.synthetic,
              "reconstruction": reconstruction_metrics(preprocessed, results, real),
              "distribution": distribution_metrics(preprocessed, results, real, synthetic), "steps": steps}
    dice = {"real": predict_dice(results, real, REAL, work, log)}
    atomic_write_json(work / "generation_benchmark.json", {**result, "dice": dice, "times_s": times})  # so far
    for name, dataset in (("real + synthetic", MIXED), ("synthetic", SYNTHETIC)):
        preprocess(dataset, log, times)
        plan(dataset, budget("baseline", args.epochs, args.iterations), log)
        train(dataset, "baseline", log, times)
        dice[name] = predict_dice(results, dataset_folder(str(raw_root), dataset), dataset, work, log)
        atomic_write_json(work / "generation_benchmark.json", {**result, "dice": dice, "times_s": times})
    result.update(dice=dice, times_s=times, total_s=round(time.perf_counter() - start, 1),
                  load_average_at_start=load_at_start, load_average_at_end=list(os.getloadavg()))
    atomic_write_json(work / "generation_benchmark.json", result)
    print(markdown(result))
    print(f"total {result['total_s']:.0f} s; results in {work / 'generation_benchmark.json'}")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
