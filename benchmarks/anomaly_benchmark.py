"""Counterfactual anomaly segmentation against two baselines on the synthetic-lesion protocol (docs/benchmarks.md).

    python benchmarks/anomaly_benchmark.py --work-dir W [--epochs 4] [--iterations 60] [--steps 10] [--shape 64 64]
    python benchmarks/anomaly_benchmark.py --work-dir W --anatomy mni --objective v_min_snr --keep-epochs 1 2 4 8 16 ...

``--anatomy phantom`` (default): phantoms; ``--shape`` with two sizes runs the 2d configuration (2D phantoms), with
three 3d_fullres. ``--anatomy mni``: 2D axial slices of augmented MNI152 volumes (write_mni_lesion_slices: healthy
slices of 12 volumes for training, and of three held-out volumes, one with tuning-family lesions, one with test-family
lesions and one healthy), the 2d configuration.

A lesion dataset is written (write_lesion_dataset: healthy phantoms for training; validation cases with lesions of the
tuning families; test cases with lesions of the test families; or write_mni_lesion_slices) and planned with the real
CLIs. Two models are
trained on the healthy cases with the same number of iterations: NnugenAnomalyTrainer (diffusion) and
NnugenAutoencoderTrainer (an L1 KL-autoencoder; no adversarial or perceptual loss). Every method gives a map in
the original geometry, with the same post-processing (median filter 3, body mask eroded by the width 0..the plans'
``anomaly.erode_search`` with the best Dice on the tuning cases, as the anomaly model chooses its own):

- intensity: |x - m| in the model's [-1, 1] units, m the median body intensity of the healthy training cases
  (two-sided, as the families are hyper- and hypo-intense);
- autoencoder: |x - decode(encode(x))|, the residual without diffusion;
- diffusion, one strength / multi-strength: nnugen_predict's CASE_anomaly with --strengths 0.5 / the plans' strengths.

Each method's threshold is its best Dice on the tuning cases; the scores (score_cases: pixel AUPRC pooled and per
volume, Dice at that threshold, image-level AUROC; and the fraction of the held-out healthy cases' pixels flagged at
that threshold) are on the test cases plus held-out healthy cases. This checks the machinery on synthetic lesions; it
says nothing about performance on real pathology.

``--objective`` sets the anomaly model's training objective (``eps``: the plans' eps-prediction, cosine schedule;
``v_min_snr``: v-prediction with min-SNR-5 weighting), ``--augmentation`` both models' training augmentation.
``--keep-epochs`` keeps the anomaly model's checkpoints after those epochs (``training.keep_epochs``) and maps with
each of them (multi-strength, ``nnugen_predict -chk``), each row with its training seconds (the trainer's epoch times,
summed); the autoencoder and the single-strength rows use the final checkpoint. One objective per work folder.
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
"""Held-out healthy cases (the last healthy ones) of a dataset.json whose nnugen_lesions does not give their number."""
DATASETS = {"phantom": (DATASET_ID, NAME), "mni": (983, "LesionSlicesMNI")}
OBJECTIVES = {  # nnugen_plan settings of the anomaly task per objective
    "eps": {"anomaly.diffusion.model_output": "eps", "anomaly.diffusion.loss_weighting": "uniform"},  # as planned
    "v_min_snr": {"anomaly.diffusion.model_output": "v", "anomaly.diffusion.loss_weighting": "min_snr"},
}


def _read(path: Path) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def case_split(raw: Path) -> tuple[list[str], list[str], list[str], list[str]]:
    """(healthy training, held-out healthy, tuning-family lesion, test-family lesion) cases of the lesion dataset."""
    lesions = json.loads((raw / "dataset.json").read_text())["nnugen_lesions"]
    healthy, held_out = lesions["healthy_cases"], lesions.get("held_out_healthy", HELD_OUT_HEALTHY)
    tuning = sorted(c for c in lesions["lesion_families"] if (raw / "labelsTr" / f"{c}.nii.gz").is_file())
    test = sorted(c for c in lesions["lesion_families"] if c not in tuning)
    return healthy[:-held_out], healthy[-held_out:], tuning, test


def _stage(start: float, message: str) -> None:
    print(f"[{time.monotonic() - start:6.0f} s] {message}", flush=True)


def _baseline_maps(root: Path, folder: str, cases: dict[str, list[Path]], healthy_train: list[str],
                   configuration_name: str, widest: int) -> dict[str, dict]:
    """{"intensity": {case: maps}, "autoencoder": {case: maps}} in the original geometry (see the module docstring),
    each (widest + 1, *spatial): the map with its body mask eroded by 0..widest voxels, for the erosion to be chosen on
    the tuning cases as the anomaly model's is. 2d: nnU-Net preprocesses a 2D case as (C, 1, y, x); the 2D autoencoder
    sees (1, C, y, x)."""
    import torch
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnugen.anomaly import body_mask, erode_mask, postprocess, residual_map
    from nnugen.config import section_of
    from nnugen.inference.case_export import maps_to_original_geometry
    from nnugen.models.autoencoder_files import load_autoencoder
    from nnugen.models.intensity_map import IntensityMap

    model = root / "results" / folder / f"NnugenAutoencoderTrainer__nnugenPlans__{configuration_name}"
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
            # the autoencoder needs sizes divisible by its strides (16 covers the planned ones): edge-padded, cropped
            pad = [p for size in reversed(x.shape[2:]) for p in (0, -size % 16)]
            reconstruction, _ = autoencoder(torch.nn.functional.pad(x, pad, mode="replicate"))
            reconstruction = reconstruction[(..., *(slice(0, size) for size in x.shape[2:]))]
            body = body_mask(x)
            for name, raw in (("intensity", (x - median).abs().mean(1, keepdim=True)),
                              ("autoencoder", residual_map(x, reconstruction.clamp(-1, 1)))):
                processed = torch.cat([postprocess(raw, 3, erode_mask(body, k))[0] for k in range(widest + 1)]).numpy()
                processed = processed[:, None] if two_d else processed
                original = maps_to_original_geometry(processed, properties, plans_manager, configuration)
                maps[name][case] = original[:, 0] if two_d else original  # 2D files read as (y, x)
    return maps


def _healthy_false_positives(scores: dict, held_out: list[str], pixels: int) -> dict[str, float]:
    """Of the held-out healthy cases at the threshold: the fraction of their pixels flagged, and of the cases with
    anything flagged (``pixels``: their pixel count)."""
    flagged = [scores["cases"][c]["flagged_voxels"] for c in held_out]
    return {"healthy_pixel_fpr": sum(flagged) / pixels,
            "healthy_cases_flagged": sum(f > 0 for f in flagged) / len(flagged)}


def _training_seconds(fold: Path) -> list[float]:
    """The trainer's epoch times, summed to each epoch (its training log)."""
    from generation_curve_2d import epoch_seconds

    return [float(s) for s in np.cumsum(epoch_seconds(next(fold.glob("training_log_*.txt"))))]


def _figure(path: Path, cases: list[str], images: dict, labels: dict, maps: dict[str, dict]) -> None:
    """Columns: test cases; rows: image, lesion mask, then one map per entry of ``maps`` (each row on its own
    scale: 0 to its 99.5th percentile over the cases shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("image", images, "gray", None), ("lesion mask", labels, "gray", 1)]
    for title, by_case in maps.items():
        rows.append((title, by_case, "magma", float(np.percentile(np.stack([by_case[c] for c in cases]), 99.5))))
    figure, axes = plt.subplots(len(rows), len(cases), figsize=(1.6 * len(cases), 1.45 * len(rows)), squeeze=False)
    for r, (title, by_case, colours, top) in enumerate(rows):
        for c, case in enumerate(cases):
            axis = axes[r, c]
            axis.imshow(np.squeeze(by_case[case]), cmap=colours, vmin=0, vmax=top, origin="lower")
            axis.set_xticks([])
            axis.set_yticks([])
        axes[r, 0].set_ylabel(title, fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--anatomy", choices=tuple(DATASETS), default="phantom",
                        help="phantom (default) or mni: 2D axial slices of augmented MNI152 volumes")
    parser.add_argument("--objective", choices=tuple(OBJECTIVES), default="eps",
                        help="the anomaly model's objective: eps (the plans': eps, cosine) or v_min_snr")
    parser.add_argument("--augmentation", choices=("none", "mirror", "nnunet"), default="none",
                        help="training.augmentation of both models")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=60, help="iterations per epoch, both models")
    parser.add_argument("--keep-epochs", dest="keep_epochs", type=int, nargs="*", default=[],
                        help="anomaly checkpoints kept after these epochs and mapped (multi-strength), e.g. 1 2 4 8 16")
    parser.add_argument("--batch", type=int, default=None, help="batch size of both models (default: the plans')")
    parser.add_argument("--features", default=None,
                        help="denoiser features per stage, e.g. [16,32,64,64] (default 16, 32, ... up to 128)")
    parser.add_argument("--steps", type=int, default=None, help="DDIM steps per strength (default: the plans')")
    parser.add_argument("--single-strengths", dest="single_strengths", type=float, nargs="*", default=[0.5],
                        help="one diffusion row per strength given here (default 0.5), besides the plans' strengths")
    parser.add_argument("--seeds", type=int, default=None,
                        help="seeds per strength for the diffusion maps (default: the plans', 8)")
    parser.add_argument("--seed", type=int, default=0, help="nnugen_predict's base seed for the diffusion maps")
    parser.add_argument("--shape", type=int, nargs="+", default=[32, 32, 32], help="phantom shape (--anatomy phantom)")
    parser.add_argument("--healthy", type=int, default=14, help=f"healthy cases ({HELD_OUT_HEALTHY} held out)")
    parser.add_argument("--tuning", type=int, default=4, help="cases with tuning-family lesions (threshold)")
    parser.add_argument("--test", type=int, default=6, help="cases with test-family lesions (scored)")
    parser.add_argument("--noise", default="gaussian", help="anomaly.noise for training and maps: gaussian, simplex "
                        "(AnoDDPM) or filtered")
    parser.add_argument("--figure", type=Path, default=None,
                        help="a PNG of test cases (2d): image, lesion mask, last multi-strength map, autoencoder map")
    parser.add_argument("-device", default="cpu")
    args = parser.parse_args(argv)

    import os
    import subprocess
    import sys

    from nnugen.anomaly import best_dice_threshold, choose_erosion, score_cases
    from nnugen.atomic_files import atomic_write_json
    from nnugen.demo.lesion_dataset import write_lesion_dataset
    from nnugen.demo.mni_lesion_slices import write_mni_lesion_slices
    from nnugen.demo.phantom import PhantomSpec

    start = time.monotonic()
    dataset_id, name = DATASETS[args.anatomy]
    folder_name = f"Dataset{dataset_id:03d}_{name}"
    configuration = "2d" if args.anatomy == "mni" or len(args.shape) == 2 else "3d_fullres"
    root = args.work_dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "preprocessed"),
           "nnUNet_results": str(root / "results"), "nnUNet_def_n_proc": "2", "nnUNet_n_proc_DA": "1"}
    bin_folder = Path(sys.executable).parent

    def run(*command: str) -> None:
        _stage(start, " ".join(command))
        with open(root / "benchmark_log.txt", "a", encoding="utf-8") as log:
            subprocess.run([str(bin_folder / command[0]), *command[1:]], env=env, stdout=log, stderr=subprocess.STDOUT,
                           check=True)

    raw = root / "raw" / folder_name
    if not (raw / "dataset.json").is_file():
        if args.anatomy == "mni":
            write_mni_lesion_slices(root / "raw", dataset_id, name)
        else:
            write_lesion_dataset(root / "raw", dataset_id, name, args.healthy, args.tuning, args.test, seed=1,
                                 spec=PhantomSpec(shape=tuple(args.shape)))
    if not (root / "preprocessed" / folder_name / "nnUNetPlans.json").is_file():
        run("nnUNetv2_plan_and_preprocess", "-d", str(dataset_id), "-c", configuration, "-np", "2", "-npfp", "2")
    train, held_out, tuning, test = case_split(raw)
    atomic_write_json(root / "preprocessed" / folder_name / "splits_final.json", [{"train": train, "val": tuning}])
    epochs = max([args.epochs, *args.keep_epochs])
    length = [f"training.epochs={epochs}", f"training.iterations_per_epoch={args.iterations}",
              "training.val_iterations_per_epoch=2", f"training.augmentation={args.augmentation}",
              f"training.preview_every={epochs}"]
    if args.batch is not None:
        length.append(f"memory.batch_size={args.batch}")
    stages = json.loads((root / "preprocessed" / folder_name / "nnUNetPlans.json").read_text())[
        "configurations"][configuration]["architecture"]["arch_kwargs"]["n_stages"]
    small = args.features or "[" + ",".join(str(min(16 * 2 ** i, 128)) for i in range(stages)) + "]"
    kept = "[" + ",".join(str(e) for e in sorted(args.keep_epochs)) + "]"
    settings = [*(f"anomaly.{s}" for s in length), *(f"autoencoder.{s}" for s in length),
                *(f"{k}={v}" for k, v in OBJECTIVES[args.objective].items()), f"anomaly.training.keep_epochs={kept}",
                "anomaly.training.initial_lr=0.001", f"anomaly.denoiser.features_per_stage={small}",
                "anomaly.denoiser.attention_stages=[]",
                *([] if args.steps is None else [f"anomaly.sampler.steps={args.steps}"]),
                f"anomaly.anomaly.noise={args.noise}", "autoencoder.training.initial_lr=0.001",
                "autoencoder.autoencoder.adversarial_weight=0",
                "autoencoder.autoencoder.perceptual_network=none"]
    timings = {}
    folds = {}
    run("nnugen_plan", "-d", str(dataset_id), "-c", configuration, *(a for s in settings for a in ("--set", s)))
    for task, trainer in (("anomaly", "NnugenAnomalyTrainer"), ("autoencoder", "NnugenAutoencoderTrainer")):
        folds[task] = root / "results" / folder_name / f"{trainer}__nnugenPlans__{configuration}" / "fold_0"
        if (folds[task] / "checkpoint_final.pth").is_file():
            continue  # trained by an earlier run of this script in the same work folder
        begin = time.monotonic()
        run("nnugen_train", str(dataset_id), "0", configuration, "--task", task, "-device", args.device, "--seed", "0")
        timings[f"nnugen_train {task}"] = time.monotonic() - begin
    training_s = {task: _training_seconds(fold) for task, fold in folds.items()}

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
    planned = json.loads((folds["anomaly"].parent / "plans.json").read_text())["configurations"][configuration][
        "nnugen"]["tasks"]["anomaly"]
    widest = int(planned["anomaly"].get("erode_search", 0))
    baselines = _baseline_maps(root, folder_name, cases, train, configuration, widest)
    labels_tuning = {c: _read(raw / "labelsTr" / f"{c}.nii.gz") > 0 for c in tuning}
    erosions = {}
    for title, name in (("intensity thresholding", "intensity"), ("autoencoder residual", "autoencoder")):
        # the baselines' masks eroded as the anomaly model's is: the width with the best Dice on the tuning cases
        erosions[title], _ = choose_erosion([baselines[name][c].reshape(widest + 1, *labels_tuning[c].shape)
                                             for c in tuning], [labels_tuning[c] for c in tuning])
        maps[title] = {c: m[erosions[title]] for c, m in baselines[name].items()}
    final = {"epoch": epochs, "iterations": epochs * args.iterations}
    points = {"intensity thresholding": {}, "autoencoder residual": {**final,
                                                                     "training_s": training_s["autoencoder"][-1]}}
    predict = ["nnugen_predict", "-d", str(dataset_id), "-c", configuration, "-f", "0", "-tr", "NnugenAnomalyTrainer",
               "-i", str(inputs), "-device", args.device, "--seed", str(args.seed), "-npp", "0", "-nps", "0"]
    seeds = [] if args.seeds is None else ["--ensemble-size", str(args.seeds)]
    x_seeds = "" if args.seeds is None else f" x {args.seeds} seeds"
    # maps of earlier runs with other seeds are kept apart
    suffix = ("" if args.seeds is None else f"_x{args.seeds}") + (f"_seed{args.seed}" if args.seed else "")
    steps = planned["sampler"]["steps"]
    runs = [(f"diffusion, strength {strength:g} (DDIM {steps}{x_seeds})", ["--strengths", f"{strength:g}", *seeds],
             ("single" if strength == 0.5 else f"single_{strength:g}") + suffix, epochs)
            for strength in args.single_strengths]
    multi = f"diffusion, strengths {'/'.join(f'{v:g}' for v in planned['anomaly']['strengths'])} (the plans'; DDIM " \
            f"{steps} each{x_seeds})"
    for epoch in sorted(set(args.keep_epochs) - {epochs}):
        # a kept checkpoint has no threshold of its own; the final one only binarises (the maps are what is scored)
        runs.append((f"{multi}, epoch {epoch}", [*seeds, "-chk", f"checkpoint_epoch_{epoch:04d}.pth",
                                                  "--threshold-file", str(folds["anomaly"] / "threshold.json")],
                     f"multi_epoch{epoch:04d}{suffix}", epoch))
    runs.append((multi + (f", epoch {epochs}" if args.keep_epochs else ""), seeds, "multi" + suffix, epochs))
    for title, flags, folder, epoch in runs:
        output = root / "maps" / folder
        if not all((output / f"{case}_anomaly.nii.gz").is_file() for case in cases if case not in train):
            shutil.rmtree(output, ignore_errors=True)  # not written completely by an earlier run
            begin = time.monotonic()
            run(*predict, "-o", str(output), *flags)
            timings[title] = time.monotonic() - begin
        maps[title] = {case: _read(output / f"{case}_anomaly.nii.gz") for case in cases if case not in train}
        points[title] = {"epoch": epoch, "iterations": epoch * args.iterations,
                         "training_s": training_s["anomaly"][epoch - 1]}

    labels = {case: _read((raw / ("labelsTs" if case in test else "labelsTr")) / f"{case}.nii.gz") > 0
              for case in cases if case not in train}
    # 2D cases written as one-slice volumes read as (1, y, x), the baseline maps as (y, x)
    maps = {title: {c: m.reshape(labels[c].shape) for c, m in by_case.items() if c in labels}
            for title, by_case in maps.items()}
    min_components = 10
    healthy_pixels = sum(labels[c].size for c in held_out)
    rows = {}
    for title, by_case in maps.items():
        threshold, tuning_dice = best_dice_threshold([by_case[c] for c in tuning], [labels[c] for c in tuning])
        scored = [*test, *held_out]
        scores = score_cases({c: by_case[c] for c in scored}, {c: labels[c] for c in scored}, threshold,
                             min_components)
        rows[title] = {"threshold": threshold, "tuning_dice": tuning_dice, **points[title],
                       "erosion": erosions.get(title, "chosen by the model"),
                       **_healthy_false_positives(scores, held_out, healthy_pixels),
                       **{k: v for k, v in scores.items() if k not in ("cases",)}}
    prevalence = float(np.mean(np.concatenate([labels[c].ravel() for c in [*test, *held_out]])))
    result = {"arguments": {k: str(v) for k, v in vars(args).items()}, "seconds": timings, "prevalence": prevalence,
              "cases": {"training": len(train), "held_out_healthy": len(held_out), "tuning": len(tuning),
                        "test": len(test)}, "load_average": list(os.getloadavg()), "methods": rows}
    atomic_write_json(root / "anomaly_benchmark.json", result)
    if args.figure is not None and configuration == "2d":
        shown = test[:: max(1, len(test) // 6)][:6]
        images = {c: _read(cases[c][0]) for c in shown}
        _figure(args.figure, shown, images, labels, {"diffusion (last epoch)": maps[runs[-1][0]],
                                                      "autoencoder": maps["autoencoder residual"]})
    print(f"\nscored on {len(test)} test-family lesion cases + {len(held_out)} held-out healthy cases; lesion "
          f"prevalence {prevalence:.4f}; thresholds: best Dice on {len(tuning)} tuning-family cases")
    print("| method | training iterations | training s | pixel AUPRC (pooled) | pixel AUPRC (per volume) | "
          "Dice at threshold | image AUROC | healthy pixels flagged | healthy cases flagged |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for title, row in rows.items():
        iterations = row.get("iterations", "-")
        seconds = f"{row['training_s']:.0f}" if "training_s" in row else "-"
        print(f"| {title} | {iterations} | {seconds} | {row['pixel_auprc']:.3f} | "
              f"{row['pixel_auprc_per_volume_mean']:.3f} | {row['dice_at_threshold']:.3f} | {row['image_auroc']:.3f} | "
              f"{row['healthy_pixel_fpr']:.4f} | {row['healthy_cases_flagged']:.2f} |")
    print("seconds:", {k: round(v) for k, v in timings.items()}, f"total {time.monotonic() - start:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
