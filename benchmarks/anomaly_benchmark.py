"""Counterfactual anomaly segmentation against two baselines on the synthetic-lesion protocol (docs/benchmarks.md).

    python benchmarks/anomaly_benchmark.py --work-dir W [--epochs 4] [--iterations 60] [--steps 10] [--shape 64 64]

``--shape`` with two sizes runs the 2d configuration (2D phantoms), with three 3d_fullres.

A lesion dataset is written (write_lesion_dataset: healthy phantoms for training; validation cases with lesions of the
tuning families; test cases with lesions of the test families) and planned with the real CLIs. Two models are
trained on the healthy cases with the same number of iterations: NnugenAnomalyTrainer (diffusion) and
NnugenAutoencoderTrainer (an L1 KL-autoencoder; no adversarial or perceptual loss). Every method gives a map in
the original geometry, with the same post-processing (median filter 3, body mask):

- intensity: |x - m| in the model's [-1, 1] units, m the median body intensity of the healthy training cases
  (two-sided, as the families are hyper- and hypo-intense);
- autoencoder: |x - decode(encode(x))|, the residual without diffusion;
- diffusion, one strength / multi-strength: nnugen_predict's CASE_anomaly with --strengths 0.5 / the plans' strengths.

Each method's threshold is its best Dice on the tuning cases; the scores (score_cases: pixel AUPRC pooled and per
volume, Dice at that threshold, image-level AUROC) are on the test cases plus held-out healthy cases. This checks the
machinery on synthetic lesions; it says nothing about performance on real pathology.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

DATASET_ID, NAME = 994, "LesionBench"
FOLDER = f"Dataset{DATASET_ID:03d}_{NAME}"
HELD_OUT_HEALTHY = 4


def _read(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def case_split(raw: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    """(healthy training, held-out healthy, tuning-family lesion, test-family lesion) cases of the lesion dataset."""
    lesions = json.loads((raw / "dataset.json").read_text())["nnugen_lesions"]
    healthy = lesions["healthy_cases"]
    tuning = sorted(c for c in lesions["lesion_families"] if (raw / "labelsTr" / f"{c}.nii.gz").is_file())
    test = sorted(c for c in lesions["lesion_families"] if c not in tuning)
    return healthy[:-HELD_OUT_HEALTHY], healthy[-HELD_OUT_HEALTHY:], tuning, test


def _stage(start: float, message: str) -> None:
    print(f"[{time.monotonic() - start:6.0f} s] {message}", flush=True)


def _baseline_maps(root: Path, cases: dict[str, list[Path]], healthy_train: list[str],
                   configuration_name: str) -> dict[str, dict]:
    """{"intensity": {case: map}, "autoencoder": {case: map}} in the original geometry (see the module docstring).
    2d: nnU-Net preprocesses a 2D case as (C, 1, y, x); the 2D autoencoder sees (1, C, y, x)."""
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnugen.anomaly import body_mask, postprocess, residual_map
    from nnugen.config import section_of
    from nnugen.inference.case_export import maps_to_original_geometry
    from nnugen.models.autoencoder_files import load_autoencoder
    from nnugen.models.intensity_map import IntensityMap

    model = root / "results" / FOLDER / f"NnugenAutoencoderTrainer__nnugenPlans__{configuration_name}"
    plans_manager = PlansManager(json.loads((model / "plans.json").read_text()))
    dataset_json = json.loads((model / "dataset.json").read_text())
    configuration = plans_manager.get_configuration(configuration_name)
    two_d = configuration_name == "2d"
    intensity = IntensityMap(section_of(configuration.configuration).intensity)
    autoencoder, _ = load_autoencoder(model / "fold_0")
    preprocessor = configuration.preprocessor_class(verbose=False)

    def model_image(files: list[Path]):
        data, _, properties = preprocessor.run_case([str(f) for f in files], None, plans_manager, configuration,
                                                    dataset_json)
        image = torch.from_numpy(data)[:, 0] if two_d else torch.from_numpy(data)
        return intensity.to_model(image[None].float()), properties

    healthy = []
    for case in healthy_train:
        x, _ = model_image(cases[case])
        healthy.append(x[body_mask(x)[:, :1].expand_as(x)])
    median = float(torch.cat(healthy).median())
    maps: dict[str, dict] = {"intensity": {}, "autoencoder": {}}
    with torch.no_grad():
        for case, files in cases.items():
            x, properties = model_image(files)
            reconstruction, _ = autoencoder(x)
            body = body_mask(x)
            for name, raw in (("intensity", (x - median).abs().mean(1, keepdim=True)),
                              ("autoencoder", residual_map(x, reconstruction.clamp(-1, 1)))):
                processed = postprocess(raw, 3, body)[0].numpy()
                processed = processed[:, None] if two_d else processed
                original = maps_to_original_geometry(processed, properties, plans_manager, configuration)[0]
                maps[name][case] = original[0] if two_d else original  # 2D files read as (y, x)
    return maps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=60, help="iterations per epoch, both models")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps per strength")
    parser.add_argument("--single-strengths", dest="single_strengths", type=float, nargs="+", default=[0.5],
                        help="one diffusion row per strength given here (default 0.5), besides the plans' strengths")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per strength for the diffusion maps (default: the plans', 8)")
    parser.add_argument("--seed", type=int, default=0, help="nnugen_predict's base seed for the diffusion maps")
    parser.add_argument("--shape", type=int, nargs="+", default=[32, 32, 32])
    parser.add_argument("--healthy", type=int, default=14, help=f"healthy cases ({HELD_OUT_HEALTHY} held out)")
    parser.add_argument("--tuning", type=int, default=4, help="cases with tuning-family lesions (threshold)")
    parser.add_argument("--test", type=int, default=6, help="cases with test-family lesions (scored)")
    parser.add_argument("--noise", default="gaussian", help="anomaly.noise for training and maps: gaussian, simplex "
                        "(AnoDDPM) or filtered")
    parser.add_argument("-device", default="cpu")
    args = parser.parse_args(argv)

    import os
    import subprocess
    import sys

    from nnugen.anomaly import best_dice_threshold, score_cases
    from nnugen.atomic_files import atomic_write_json
    from nnugen.demo.lesion_dataset import write_lesion_dataset
    from nnugen.demo.phantom import PhantomSpec

    start = time.monotonic()
    configuration = "2d" if len(args.shape) == 2 else "3d_fullres"
    root = args.work_dir.resolve()
    env = {**os.environ, "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
           "nnUNet_results": str(root / "results"), "nnUNet_def_n_proc": "2", "nnUNet_n_proc_DA": "1"}
    bin_folder = Path(sys.executable).parent

    def run(*command: str) -> None:
        _stage(start, " ".join(command))
        with open(root / "benchmark_log.txt", "a", encoding="utf-8") as log:
            subprocess.run([str(bin_folder / command[0]), *command[1:]], env=env, stdout=log, stderr=subprocess.STDOUT,
                           check=True)

    raw = root / "raw" / FOLDER
    if not (raw / "dataset.json").is_file():
        write_lesion_dataset(root / "raw", DATASET_ID, NAME, args.healthy, args.tuning, args.test, seed=1,
                             spec=PhantomSpec(shape=tuple(args.shape)))
        run("nnUNetv2_plan_and_preprocess", "-d", str(DATASET_ID), "-c", configuration, "-np", "2", "-npfp", "2")
    train, held_out, tuning, test = case_split(raw)
    atomic_write_json(root / "preprocessed" / FOLDER / "splits_final.json", [{"train": train, "val": tuning}])
    length = [f"training.epochs={args.epochs}", f"training.iterations_per_epoch={args.iterations}",
              "training.val_iterations_per_epoch=2"]
    stages = json.loads((root / "preprocessed" / FOLDER / "nnUNetPlans.json").read_text())[
        "configurations"][configuration]["architecture"]["arch_kwargs"]["n_stages"]
    small = ",".join(str(min(16 * 2 ** i, 128)) for i in range(stages))  # a small denoiser: 16, 32, ... up to 128
    settings = [*(f"anomaly.{s}" for s in length), *(f"autoencoder.{s}" for s in length),
                "anomaly.training.initial_lr=0.001", f"anomaly.denoiser.features_per_stage=[{small}]",
                "anomaly.denoiser.attention_stages=[]", f"anomaly.sampler.steps={args.steps}",
                f"anomaly.anomaly.noise={args.noise}", "autoencoder.training.initial_lr=0.001",
                "autoencoder.autoencoder.adversarial_weight=0",
                "autoencoder.autoencoder.perceptual_network=none"]
    timings = {}
    run("nnugen_plan", "-d", str(DATASET_ID), "-c", configuration, *(a for s in settings for a in ("--set", s)))
    for task, trainer in (("anomaly", "NnugenAnomalyTrainer"), ("autoencoder", "NnugenAutoencoderTrainer")):
        fold = root / "results" / FOLDER / f"{trainer}__nnugenPlans__{configuration}" / "fold_0"
        if (fold / "checkpoint_final.pth").is_file():
            continue  # trained by an earlier run of this script in the same work folder
        begin = time.monotonic()
        run("nnugen_train", str(DATASET_ID), "0", configuration, "--task", task, "-device", args.device, "--seed", "0")
        timings[task] = time.monotonic() - begin

    # every case to map, in one input folder (nnU-Net's layout)
    inputs = root / "inputs"
    shutil.rmtree(inputs, ignore_errors=True)
    inputs.mkdir()
    cases: dict[str, list[Path]] = {}
    for case in [*train, *held_out, *tuning, *test]:
        source = raw / ("imagesTs" if case in test else "imagesTr")
        cases[case] = sorted(source.glob(f"{case}_[0-9][0-9][0-9][0-9].nii.gz"))
        if case not in train:
            for path in cases[case]:
                shutil.copy(path, inputs / path.name)
    maps = {"intensity thresholding": {}, "autoencoder residual": {}}
    baselines = _baseline_maps(root, cases, train, configuration)
    maps["intensity thresholding"], maps["autoencoder residual"] = baselines["intensity"], baselines["autoencoder"]
    predict = ["nnugen_predict", "-d", str(DATASET_ID), "-c", configuration, "-f", "0", "-tr", "NnugenAnomalyTrainer",
               "-i", str(inputs), "-device", args.device, "--seed", str(args.seed), "-npp", "0", "-nps", "0"]
    seeds = [] if args.seeds is None else ["--ensemble-size", str(args.seeds)]
    x_seeds = "" if args.seeds is None else f" x {args.seeds} seeds"
    # maps of earlier runs with other seeds are kept apart
    suffix = ("" if args.seeds is None else f"_x{args.seeds}") + (f"_seed{args.seed}" if args.seed else "")
    runs = [(f"diffusion, strength {strength:g} (DDIM {args.steps}{x_seeds})", ["--strengths", f"{strength:g}", *seeds],
             ("single" if strength == 0.5 else f"single_{strength:g}") + suffix) for strength in args.single_strengths]
    runs.append((f"diffusion, strengths 0.25/0.5/0.75 (DDIM {args.steps} each{x_seeds})", seeds, "multi" + suffix))
    for title, flags, folder in runs:
        output = root / "maps" / folder
        if not all((output / f"{case}_anomaly.nii.gz").is_file() for case in cases if case not in train):
            shutil.rmtree(output, ignore_errors=True)  # not written completely by an earlier run
            begin = time.monotonic()
            run(*predict, "-o", str(output), *flags)
            timings[title] = time.monotonic() - begin
        maps[title] = {case: _read(output / f"{case}_anomaly.nii.gz") for case in cases if case not in train}

    labels = {case: _read((raw / ("labelsTs" if case in test else "labelsTr")) / f"{case}.nii.gz") > 0
              for case in cases if case not in train}
    min_components = 10
    rows = {}
    for title, by_case in maps.items():
        threshold, tuning_dice = best_dice_threshold([by_case[c] for c in tuning], [labels[c] for c in tuning])
        scored = [*test, *held_out]
        scores = score_cases({c: by_case[c] for c in scored}, {c: labels[c] for c in scored}, threshold,
                             min_components)
        rows[title] = {"threshold": threshold, "tuning_dice": tuning_dice,
                       **{k: v for k, v in scores.items() if k not in ("cases",)}}
    prevalence = float(np.mean(np.concatenate([labels[c].ravel() for c in [*test, *held_out]])))
    result = {"arguments": {k: str(v) for k, v in vars(args).items()}, "seconds": timings, "prevalence": prevalence,
              "methods": rows}
    atomic_write_json(root / "anomaly_benchmark.json", result)
    print(f"\nscored on {len(test)} test-family lesion cases + {len(held_out)} held-out healthy cases; lesion "
          f"prevalence {prevalence:.4f}; thresholds: best Dice on {len(tuning)} tuning-family cases")
    print("| method | pixel AUPRC (pooled) | pixel AUPRC (per volume) | Dice at threshold | image AUROC |")
    print("| --- | --- | --- | --- | --- |")
    for title, row in rows.items():
        print(f"| {title} | {row['pixel_auprc']:.3f} | {row['pixel_auprc_per_volume_mean']:.3f} | "
              f"{row['dice_at_threshold']:.3f} | {row['image_auroc']:.3f} |")
    print("seconds:", {k: round(v) for k, v in timings.items()}, f"total {time.monotonic() - start:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
