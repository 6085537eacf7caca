"""``run_generation_demo``: the demo's generation part, on its segmentation dataset, already planned and
preprocessed.

``nnugen_train --task ddpm`` trains a small joint image + label DDPM (the planned objective, a smaller denoiser, the
run length set with ``nnugen_plan --set ddpm.…``; the planner keeps the other tasks' settings); ``nnugen_sample``
writes cases with their label maps. Then the part shows whether it learned:

- distance to real: ``nnugen_evaluate --generated`` scores four sets of as many images against the real training
  cases, by the Fréchet distance of the trained nnU-Net encoder's features (the demo's baseline, trained first when
  the segmentation part did not run): the samples; unseen real cases of the dataset's own recipe (the lowest
  distance a set of that size can reach: with a few cases in hundreds of feature dimensions, even real cases lie
  far from the training set); noise (Gaussian, each image with a real case's mean and standard deviation); and
  scrambled real cases (their intensities and power spectrum, so their texture and blob scale, without their anatomy;
  reference_images.py). The checks are where the samples lie between unseen real cases and each reference: 0 as
  close as real cases, 1 as far as the reference;
- labels that match their images: the baseline nnU-Net segments the samples (``nnUNetv2_predict``), and its Dice
  against the sampled label maps says whether each generated label map describes its image;
- a picture: samples with their label maps above real cases with theirs.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nnugen.demo.commands import cli, log_size, logged_commands, run_logged
from nnugen.demo.pictures import Panel, as_slice, busiest_slice, write_picture
from nnugen.demo.progress_follow import files_watch, prediction_watch, training_watch
from nnugen.demo.report import Check, Section, at_least
from nnugen.folders.model_folder import ModelFolder
from nnugen.tasks import TASKS

NOISE_SHARE = 1 / 3
"""The samples' Fréchet distance to the training cases may exceed unseen real cases' by at most this share of what
noise's exceeds it by."""
SCRAMBLED_SHARE = 1.0
"""... and by at most this share of what scrambled real cases' exceeds it by (reference_images.py): the samples must
be nearer the training cases than images with the data's intensities and power spectrum but no anatomy are. The
2D ``--quick`` samples scored 0.77 (2026-12-05), the 3D blobs of ``--real`` 2.6."""
LABEL_DICE = 0.5
"""The baseline's mean foreground Dice on the samples against their own label maps must reach this."""
SAMPLES_DATASET = "Dataset989_nnugenDemoSamples"
"""``nnugen_sample --as-dataset``: the samples as an nnU-Net raw dataset (imagesTr, labelsTr, dataset.json)."""


@dataclass(frozen=True)
class GenerationBudget:
    epochs: int
    iterations: int
    cases: int
    steps: int
    widest: int
    """Width cap of the denoiser's stages (16, 32, ... up to this), instead of the planned 32 ... 320."""
    batch: int = 8
    """Patches per step (the plan's nnU-Net batch of 2 is for segmentation; a generator learns faster from more)."""
    learning_rate: float = 3e-4
    """AdamW's rate (the plan's 1e-4 is for long runs; 3e-4 learned fastest on the 2D curve, docs/benchmarks.md)."""


def generation_budget(quick: bool, three_d: bool = False) -> GenerationBudget:
    if three_d:  # a 3D patch cost ~1 s per sample and iteration at width 64 and batch 8 (--real, 2 cores, 2026-12-05)
        return GenerationBudget(epochs=2 if quick else 6, iterations=100, cases=4 if quick else 8, steps=20,
                                widest=32, batch=2)
    if quick:
        return GenerationBudget(epochs=2, iterations=100, cases=8, steps=20, widest=64)
    return GenerationBudget(epochs=6, iterations=100, cases=16, steps=25, widest=64)


def small_features(planned: list[int], widest: int) -> list[int]:
    """16, 32, 64, ... per stage, never above the planned width or ``widest``."""
    return [min(int(f), 16 * 2 ** s, widest) for s, f in enumerate(planned)]


def _planned_features(dataset_name: str, configuration: str) -> list[int]:
    plans = Path(os.environ["nnUNet_preprocessed"]) / dataset_name / "nnugenPlans.json"
    if not plans.is_file():
        raise RuntimeError(f"{plans} is missing; the demo runs nnugen_plan before the generation step")
    section = json.loads(plans.read_text())["configurations"][configuration]["nnugen"]
    return section["tasks"]["ddpm"]["denoiser"]["features_per_stage"]


def run_generation_demo(dataset_id: int, configuration: str, raw: Path, labels: dict[str, int], work_dir: Path,
                        budget: GenerationBudget, device: str, say: Callable[[str], None], log: Path) -> Section:
    """Train a small DDPM (image + label together) on fold 0, sample, score and draw (see the module docstring).

    ``raw`` is the demo's raw dataset folder (its name is the dataset's name; a phantom or MNI152 dataset the demo
    wrote, whose recipe gives the unseen real cases); ``say`` prints a stage line; every command and its output go
    to ``log``."""
    since = log_size(log)
    features = small_features(_planned_features(raw.name, configuration), budget.widest)
    dataset = _train_and_sample(dataset_id, configuration, features, budget, work_dir, device, say, log)
    _ensure_baseline(dataset_id, configuration, device, say, log)
    distances = _distances_to_real(dataset_id, configuration, raw, dataset, work_dir, budget.cases, device, say, log)
    label_dice = _labels_against_nnunet(dataset_id, configuration, dataset, labels, work_dir, device, say, log)

    frechet = {name: result["features"]["frechet"] for name, result in distances.items()}
    share = noise_share(frechet["samples"], frechet["unseen real"], frechet["noise"])
    scrambled = noise_share(frechet["samples"], frechet["unseen real"], frechet["scrambled"])
    section = Section("Generation: images with their label maps")
    section.lines += [
        f"A joint image + label DDPM ({budget.epochs * budget.iterations} training iterations of {budget.batch} "
        f"patches, denoiser {features}, the planned objective) sampled {budget.cases} cases in {budget.steps} steps.",
        f"Fréchet distance of {budget.cases} images to the real training cases, on the trained nnU-Net's encoder "
        f"features: unseen real cases {frechet['unseen real']:.4g}, samples {frechet['samples']:.4g}, noise with the "
        f"real cases' mean and spread {frechet['noise']:.4g}, scrambled real cases (their intensities and power "
        f"spectrum, no anatomy) {frechet['scrambled']:.4g}: the samples lie {share:.2f} of the way from real "
        f"to noise and {scrambled:.2f} of the way to the scrambled cases. MS-SSIM within a set (lower = more "
        f"diverse): samples {distances['samples']['ms_ssim']['generated']:.3f}, real "
        f"{distances['samples']['ms_ssim']['real']:.3f}.",
        f"nnU-Net (the baseline) segments the samples with a mean foreground Dice of {label_dice:.3f} against their "
        "own generated label maps: the labels describe the images they came with."]
    section.checks += [
        Check(f"the samples lie near real cases, far from noise (Fréchet: at most {NOISE_SHARE:.2f} of the way "
              "from unseen real cases to noise)",
              f"{share:.2f} (unseen real {frechet['unseen real']:.4g}, samples {frechet['samples']:.4g}, noise "
              f"{frechet['noise']:.4g})", bool(share <= NOISE_SHARE)),
        Check("the samples have the anatomy, not only the intensities and texture (Fréchet: nearer the training "
              f"cases than scrambled real cases are; at most {SCRAMBLED_SHARE:.2f} of the way from unseen real cases "
              "to them)",
              f"{scrambled:.2f} (scrambled {frechet['scrambled']:.4g})", bool(scrambled <= SCRAMBLED_SHARE)),
        at_least("the generated labels match their images (nnU-Net's Dice on the samples)", label_dice, LABEL_DICE)]
    section.pictures.append(_picture(dataset, raw, len(labels), work_dir / "pictures" / "generation.png"))
    section.numbers.update({"frechet/samples": frechet["samples"], "frechet/unseen_real": frechet["unseen real"],
                            "frechet/noise": frechet["noise"], "noise_share": share,
                            "frechet/scrambled": frechet["scrambled"], "scrambled_share": scrambled,
                            "label_dice": label_dice})
    section.commands += logged_commands(log, since)
    say(section.lines[1])
    say(section.lines[2])
    return section


def _train_and_sample(dataset_id: int, configuration: str, features: list[int], budget: GenerationBudget,
                      work_dir: Path, device: str, say, log: Path) -> Path:
    """nnugen_plan with the budget, nnugen_train --task ddpm, nnugen_sample --as-dataset; returns the samples'
    raw dataset folder."""
    settings = {
        "training.epochs": budget.epochs,
        "training.iterations_per_epoch": budget.iterations,
        "training.val_iterations_per_epoch": 1,
        "training.preview_every": budget.epochs,
        "training.initial_lr": budget.learning_rate,
        "memory.batch_size": budget.batch,
        "generation.mode": "joint",
        "generation.preview_steps": budget.steps,
        "denoiser.features_per_stage": json.dumps(features, separators=(",", ":")),
        "denoiser.attention_stages": "[]",
    }
    sets = [a for key, value in settings.items() for a in ("--set", f"ddpm.{key}={value}")]
    say(f"nnugen_plan --set ddpm.… (generator: {budget.epochs * budget.iterations} iterations of {budget.batch} "
        f"patches, denoiser {features})")
    run_logged([cli("nnugen_plan"), "-d", str(dataset_id), "-c", configuration, *sets], log)
    say(f"nnugen_train {dataset_id} 0 {configuration} --task ddpm -device {device} (image + label jointly)")
    fold = ModelFolder.of(dataset_id, TASKS["ddpm"].trainer, configuration).fold(0)
    run_logged([cli("nnugen_train"), str(dataset_id), "0", configuration, "--task", "ddpm", "-device", device,
                "--seed", "0"], log, training_watch(fold))
    output = work_dir / "samples" / "ddpm"
    shutil.rmtree(output, ignore_errors=True)
    say(f"nnugen_sample: {budget.cases} synthetic cases with labels, {budget.steps} sampler steps")
    run_logged([cli("nnugen_sample"), str(dataset_id), configuration, str(budget.cases), str(output), "--steps",
                str(budget.steps), "--seed", "0", "-device", device, "--as-dataset", SAMPLES_DATASET], log,
               files_watch(output / "previews", [f"case_{k:04d}.png" for k in range(budget.cases)], "cases"))
    return output / SAMPLES_DATASET


def _distances_to_real(dataset_id: int, configuration: str, raw: Path, samples: Path, work_dir: Path, cases: int,
                       device: str, say, log: Path) -> dict[str, dict]:
    """The samples, as many unseen real cases and as many images of each reference (reference_images.py), scored
    against the training cases in one ``nnugen_evaluate --generated`` call; returns each set's
    generation_summary.json."""
    from nnugen.demo.reference_images import REFERENCES, write_reference_set

    unseen = work_dir / "samples" / "unseen_real"
    write_unseen_real(raw, unseen, cases)
    sets = {"samples": samples, "unseen real": unseen}
    training_images = sorted((raw / "imagesTr").glob("*_0000.nii.gz"))
    for kind in REFERENCES:
        sets[kind] = work_dir / "samples" / kind
        write_reference_set(kind, [training_images[k % len(training_images)] for k in range(cases)], sets[kind])
    say(f"nnugen_evaluate --generated {' '.join(str(f) for f in sets.values())} --real {raw / 'imagesTr'} "
        "(features of the trained nnU-Net)")
    run_logged([cli("nnugen_evaluate"), "--generated", *map(str, sets.values()), "--real", str(raw / "imagesTr"),
                "-d", str(dataset_id), "-c", configuration, "-f", "0", "-device", device], log)
    return {name: json.loads((folder / "generation_summary.json").read_text(encoding="utf-8"))
            for name, folder in sets.items()}


def _labels_against_nnunet(dataset_id: int, configuration: str, samples: Path, labels: dict[str, int],
                           work_dir: Path, device: str, say, log: Path) -> float:
    """The baseline nnU-Net segments the samples (nnUNetv2_predict); its mean foreground Dice against their own
    label maps."""
    segmented = work_dir / "predictions" / "samples_segmented_by_nnunet"
    shutil.rmtree(segmented, ignore_errors=True)
    say("nnUNetv2_predict: the baseline nnU-Net segments the samples, to check their label maps")
    run_logged([cli("nnUNetv2_predict"), "-d", str(dataset_id), "-c", configuration, "-f", "0", "-tr",
                TASKS["baseline"].trainer, "-p", "nnugenPlans", "-i", str(samples / "imagesTr"), "-o", str(segmented),
                "-device", device, "--disable_tta", "-npp", "0", "-nps", "0"], log,
               prediction_watch(samples / "imagesTr", segmented))
    return _label_agreement(segmented, samples / "labelsTr", labels)


def _ensure_baseline(dataset_id: int, configuration: str, device: str, say, log: Path) -> None:
    """The baseline nnU-Net whose encoder features and predictions score the samples (the segmentation part trains
    it; alone, this part does)."""
    fold = ModelFolder.of(dataset_id, TASKS["baseline"].trainer, configuration).fold(0)
    if (fold / "checkpoint_final.pth").is_file():
        return
    say(f"nnugen_train {dataset_id} 0 {configuration} --task baseline -device {device} (to score the samples)")
    run_logged([cli("nnugen_train"), str(dataset_id), "0", configuration, "--task", "baseline", "-device", device,
                "--seed", "0"], log, training_watch(fold))


def noise_share(samples: float, real: float, noise: float) -> float:
    """Where ``samples`` lies from ``real`` (0) to ``noise`` (1), distances of sets of one size; infinite where
    noise is not farther than real (features that cannot tell them apart show nothing)."""
    return (samples - real) / (noise - real) if noise > real else float("inf")


def write_unseen_real(raw: Path, folder: Path, n: int) -> None:
    """``n`` real cases of the demo dataset's own recipe that no model saw, images only, into ``folder``."""
    from nnugen.demo.mni_dataset import write_unseen_mni_images
    from nnugen.demo.phantom import write_unseen_phantom_images

    shutil.rmtree(folder, ignore_errors=True)
    described = json.loads((raw / "dataset.json").read_text(encoding="utf-8"))
    mni = "nnugen_mni" in described or "nnugen_mni_slices" in described
    writer = write_unseen_mni_images if mni else write_unseen_phantom_images
    writer(raw, folder, n)


def _label_agreement(segmented: Path, sampled_labels: Path, labels: dict[str, int]) -> float:
    """nnU-Net's mean foreground Dice of its segmentations of the samples against the samples' label maps."""
    from nnugen.evaluation.folder_scores import folder_scores, foreground_mean

    scores = folder_scores(segmented, sampled_labels, labels, ".nii.gz")
    return foreground_mean({name: values["Dice"] for name, values in scores.items()})


def _picture(samples: Path, raw: Path, classes: int, path: Path, shown: int = 6) -> Path:
    """Rows: sampled images, their label maps, real images, their label maps (``samples``, ``raw``: raw datasets)."""
    import SimpleITK as sitk

    def read(file: Path):
        return sitk.GetArrayFromImage(sitk.ReadImage(str(file)))

    rows: list[list[Panel]] = []
    for folder, caption in ((samples, "sample"), (raw, "real")):
        label_files = sorted((folder / "labelsTr").glob("*.nii.gz"))
        label_files = label_files[:: max(1, len(label_files) // shown)][:shown]  # spread: slices of many volumes
        images, maps = [], []
        for k, label_file in enumerate(label_files):
            label = read(label_file)
            index = busiest_slice(label > 0) if label.ndim == 3 else None
            image = read(folder / "imagesTr" / f"{label_file.name[: -len('.nii.gz')]}_0000.nii.gz")
            images.append(Panel(as_slice(image, index), f"{caption} {k}"))
            maps.append(Panel(as_slice(label, index), f"{caption} {k}: label", "label", classes))
        rows += [images, maps]
    return write_picture(rows, path, "Generated cases with their label maps (top) and real cases (bottom)")
