"""``run_anomaly_demo``: counterfactual anomaly segmentation on healthy phantoms with inserted synthetic lesions,
through the real CLIs: write_lesion_dataset -> nnUNetv2_plan_and_preprocess -> nnugen_plan -> nnugen_train --task
anomaly (healthy cases only; the threshold is chosen on validation cases with lesions of the tuning families) ->
nnUNetv2_predict on held-out cases with lesions of other families (the segmentation) and nnugen_predict (the anomaly
maps) -> pixel AUPRC and Dice, a picture (image, lesions, counterfactual, map, segmentation) and the checks: AUPRC
several times the lesion prevalence (what a map without information scores) and a Dice well above 0. 2D phantoms by
default, 3D with ``three_d``; with ``real``, brain-middle slices of the augmented MNI152 volumes with the same kinds of
lesions (mni_lesion_slices.py). The synthetic lesions check the machinery, not performance on real pathology."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nnugen.demo.pictures import Panel, as_slice, busiest_slice, write_picture
from nnugen.demo.report import Section, at_least
from nnugen.folders.model_folder import ModelFolder
from nnugen.tasks import TASKS

DATASET_ID = 993
DATASET_NAME = "nnugenLesions"
MNI_DATASET_ID = 995
MNI_DATASET_NAME = "nnugenMNI152Lesions"
SLICE_STRIDE = 3
"""Of the MNI152 volumes that choose the threshold, are scored and stay healthy, every third brain-middle slice."""
TRAINER = TASKS["anomaly"].trainer
AUPRC_OVER_PREVALENCE = 3.0
"""The pixel AUPRC must be at least this many times the lesion prevalence."""
LESION_DICE = 0.2
"""The lesion segmentation's pooled Dice must reach this."""


@dataclass(frozen=True)
class AnomalyDemoSize:
    shape: tuple[int, ...]
    n_healthy: int
    n_val_lesion: int
    n_test_lesion: int
    epochs: int
    iterations: int
    steps: int
    seeds: int
    real: bool = False
    """MNI152 slices: ``n_healthy`` counts training volumes (every brain-middle slice), and one volume each gives the
    validation, test and held-out healthy slices (every SLICE_STRIDE-th; ``n_val_lesion``, ``n_test_lesion`` unused)."""
    settings: tuple[str, ...] = ()
    """More ``nnugen_plan --set`` settings of the anomaly task."""


def anomaly_demo_size(quick: bool, three_d: bool = False, real: bool = False) -> AnomalyDemoSize:
    if real:  # the MNI152 slice benchmark's model (docs/benchmarks.md): v + min-SNR, no augmentation, batch 8
        return AnomalyDemoSize((), 8, 1, 1, 8 if quick else 16, 32, 3, 8, real=True, settings=(
            "diffusion.model_output=v", "diffusion.loss_weighting=min_snr", "training.augmentation=none",
            "memory.batch_size=8"))
    if three_d:  # as measured before the planned strength changed (docs/benchmarks.md, "The first run")
        three = ("anomaly.strengths=[0.25,0.5,0.75]",)
        return (AnomalyDemoSize((32, 32, 32), 6, 2, 2, 1, 20, 4, 1, settings=three) if quick
                else AnomalyDemoSize((32, 32, 32), 10, 3, 4, 4, 60, 8, 4, settings=three))
    # 2D: --quick runs the same size; a shorter run (2-3 x 50-75 iterations, 2 seeds) left the lesions in its
    # counterfactuals and failed both checks (AUPRC 2.4-2.7x the prevalence, Dice 0.07-0.11; 2026-12-05). The maps
    # are the plans' (strength 0.75, 8 seeds, 3 DDIM steps)
    return AnomalyDemoSize((64, 64), 16, 4, 6, 4, 75, 3, 8)


def _settings(size: AnomalyDemoSize, stages: int) -> list[str]:
    """nnugen_plan --set flags: the run length, a small denoiser of the plan's ``stages`` (16, 32, 64, 128, 128, ...;
    the planned one takes ~5 s per 3D step on 2 CPU cores), DDIM steps per strength and seeds (fewer than the plans'
    8, to keep the demo short)."""
    features = str([min(16 * 2**s, 128) for s in range(stages)]).replace(" ", "")
    settings = (f"anomaly.training.epochs={size.epochs}", f"anomaly.training.iterations_per_epoch={size.iterations}",
                "anomaly.training.val_iterations_per_epoch=2", "anomaly.training.initial_lr=0.001",
                f"anomaly.denoiser.features_per_stage={features}", "anomaly.denoiser.attention_stages=[]",
                f"anomaly.sampler.steps={size.steps}", f"anomaly.sampler.seeds={size.seeds}",
                *(f"anomaly.{s}" for s in size.settings))
    return [a for s in settings for a in ("--set", s)]


def _planned_stages(preprocessed: Path, configuration: str) -> int:
    """The number of stages nnU-Net planned for ``configuration`` (the denoiser has as many)."""
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text(encoding="utf-8"))
    return int(plans["configurations"][configuration]["architecture"]["arch_kwargs"]["n_stages"])


def _read(path: Path):
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def run_anomaly_demo(work_dir: Path, size: AnomalyDemoSize, device: str, say: Callable[[str], None],
                     log: Path) -> Section:
    """Run the demo at ``size`` (``anomaly_demo_size``; a 3D shape runs 3d_fullres) in ``work_dir`` (nnUNet_*
    folders inside it unless set); commands' output goes to ``log``. Returns the report's section; its ``numbers``:
    pixel_auprc, dice, prevalence, threshold, cases (held-out)."""
    from nnugen.atomic_files import atomic_write_json
    from nnugen.demo.commands import cli, log_size, logged_commands, run_logged, set_nnunet_folders
    from nnugen.demo.lesion_dataset import write_lesion_dataset
    from nnugen.demo.mni_lesion_slices import write_mni_lesion_slices
    from nnugen.demo.phantom import PhantomSpec
    from nnugen.demo.progress_follow import training_watch

    three_d = len(size.shape) == 3
    configuration, short = ("3d_fullres", "3d") if three_d else ("2d", "2d")
    work_dir = Path(work_dir)
    folders = set_nnunet_folders(work_dir)
    since = log_size(log)
    dataset_id, name = _dataset(size)
    folder = f"Dataset{dataset_id:03d}_{name}"
    raw = Path(folders["nnUNet_raw"]) / folder
    if not (raw / "dataset.json").is_file() and size.real:
        say(f"anomaly: writing the brain-middle axial slices of {size.n_healthy} healthy augmented MNI152 volumes, "
            f"and one slice in {SLICE_STRIDE} of three more: one with lesions to choose the threshold, one with "
            "lesions of other families (held out) and one healthy (held out) (synthetic lesions: a check of the "
            "machinery, not of real pathology)")
        write_mni_lesion_slices(Path(folders["nnUNet_raw"]), dataset_id, name, size.n_healthy,
                                stride=SLICE_STRIDE, seed=1, axis=0)
    elif not (raw / "dataset.json").is_file():
        say(f"anomaly: writing {size.n_healthy} healthy phantoms, {size.n_val_lesion} with lesions to choose the "
            f"threshold and {size.n_test_lesion} held-out ones with lesions of other families "
            f"({'x'.join(map(str, size.shape))}, synthetic lesions: a check of the machinery, not of real pathology)")
        write_lesion_dataset(Path(folders["nnUNet_raw"]), dataset_id, name, size.n_healthy,
                             size.n_val_lesion, size.n_test_lesion, seed=0, spec=PhantomSpec(shape=size.shape))
    say("anomaly: nnUNetv2_plan_and_preprocess (nnU-Net, unchanged)")
    # no --verify_dataset_integrity: the datasets written here pass it in tests/anomaly, and its pool costs 3 s
    run_logged([cli("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", configuration, "-np", "2",
                "-npfp", "2"], log)
    lesions = json.loads((raw / "dataset.json").read_text())["nnugen_lesions"]
    validation = sorted(case for case in lesions["lesion_families"] if (raw / "labelsTr" / f"{case}.nii.gz").is_file())
    healthy = lesions["healthy_cases"]
    training = healthy[: len(healthy) - int(lesions.get("held_out_healthy", 0))]
    # one fold: the healthy training cases train, the lesion cases of imagesTr choose the threshold
    atomic_write_json(Path(folders["nnUNet_preprocessed"]) / folder / "splits_final.json",
                      [{"train": training, "val": validation}])
    say(f"anomaly: nnugen_plan ({size.epochs} epochs x {size.iterations} iterations, DDIM {size.steps} steps per "
        "strength)")
    stages = _planned_stages(Path(folders["nnUNet_preprocessed"]) / folder, configuration)
    run_logged([cli("nnugen_plan"), "-d", str(dataset_id), "-c", configuration, *_settings(size, stages)], log)
    say(f"anomaly: nnugen_train {dataset_id} 0 {short} --task anomaly -device {device} (healthy cases only; then "
        "the threshold on the validation lesions)")
    model = ModelFolder.of(folder, TRAINER, configuration, results=Path(folders["nnUNet_results"]))
    run_logged([cli("nnugen_train"), str(dataset_id), "0", short, "--task", "anomaly", "-device", device, "--seed",
                "0"], log, training_watch(model.fold(0)))

    held_out = predict_held_out(raw, model, configuration, device, work_dir, say, log)
    cases, labels, predicted, maps, numbers = (held_out.cases, held_out.labels, held_out.predicted, held_out.maps,
                                               held_out.numbers)
    threshold = numbers["threshold"]
    line = (f"On {len(cases)} held-out cases with lesions of families the threshold never saw: pixel AUPRC "
            f"{numbers['pixel_auprc']:.3f} (lesion prevalence {numbers['prevalence']:.3f}, what a map without "
            f"information scores), Dice {numbers['dice']:.3f} at the threshold {threshold:.4g}.")
    say(f"anomaly: {line} Maps and counterfactuals in {maps}")
    section = Section("Anomaly: lesions found by a model of healthy cases", numbers=numbers)
    section.lines += [
        f"A diffusion model trained on {len(training)} healthy {'MNI152 slices' if size.real else 'phantoms'} only "
        f"({size.epochs} epochs x {size.iterations} iterations) turns each image into a pseudo-healthy "
        f"counterfactual ({size.steps} DDIM steps per strength, {size.seeds} seed(s)); the difference is the anomaly "
        f"map, thresholded as chosen on {len(validation)} validation cases.", line]
    section.checks += [
        at_least(f"lesions found above chance (pixel AUPRC / prevalence, needed {AUPRC_OVER_PREVALENCE:g}x)",
                 numbers["pixel_auprc"] / max(numbers["prevalence"], 1e-12), AUPRC_OVER_PREVALENCE, "x"),
        at_least("the lesion segmentation overlaps the lesions (pooled Dice)", numbers["dice"], LESION_DICE)]
    section.pictures.append(_picture(raw, cases, labels, predicted, maps, work_dir / "pictures" / "anomaly.png"))
    section.commands += logged_commands(log, since)
    return section


def _dataset(size: AnomalyDemoSize) -> tuple[int, str]:
    """(ID, name) of the lesion dataset ``size`` describes."""
    if size.real:
        return MNI_DATASET_ID, MNI_DATASET_NAME
    return DATASET_ID, f"{DATASET_NAME}{'3D' if len(size.shape) == 3 else '2D'}"


@dataclass(frozen=True)
class HeldOut:
    cases: list[str]
    labels: list
    """Lesion masks (bool arrays) of the held-out cases."""
    predicted: list
    """nnUNetv2_predict's lesion segmentations (bool arrays)."""
    maps: Path
    """nnugen_predict's folder: CASE_anomaly / CASE_counterfactual images."""
    numbers: dict
    """pixel_auprc, dice, prevalence, threshold, cases."""


def predict_held_out(raw: Path, model: ModelFolder, configuration: str, device: str, work_dir: Path,
                     say: Callable[[str], None], log: Path) -> HeldOut:
    """The trained anomaly model on the held-out cases of ``raw``: nnUNetv2_predict (the lesion segmentation at the
    stored threshold) and nnugen_predict (maps and counterfactuals), scored against labelsTs (pixel AUPRC, Dice)."""
    import numpy as np

    from nnugen.anomaly import dice, pixel_auprc
    from nnugen.demo.commands import cli, run_logged
    from nnugen.demo.progress_follow import prediction_watch

    segmentations, maps = work_dir / "predictions" / TRAINER, work_dir / "predictions" / f"{TRAINER}_maps"
    for output in (segmentations, maps):
        shutil.rmtree(output, ignore_errors=True)
    common = ["-d", raw.name, "-c", configuration, "-f", "0", "-tr", TRAINER, "-p", "nnugenPlans", "-i",
              str(raw / "imagesTs"), "-device", device, "-npp", "0", "-nps", "0"]
    cases = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTs").glob("*.nii.gz"))
    say(f"anomaly: nnUNetv2_predict -tr {TRAINER} on {len(cases)} held-out cases (lesion segmentation)")
    run_logged([cli("nnUNetv2_predict"), *common, "-o", str(segmentations), "--disable_tta"], log,
               prediction_watch(raw / "imagesTs", segmentations))
    say(f"anomaly: nnugen_predict -tr {TRAINER} (anomaly maps and pseudo-healthy counterfactuals)")
    run_logged([cli("nnugen_predict"), *common, "-o", str(maps), "--seed", "0"], log,
               prediction_watch(raw / "imagesTs", maps))

    labels = [_read(raw / "labelsTs" / f"{case}.nii.gz") > 0 for case in cases]
    predicted = [_read(segmentations / f"{case}.nii.gz") == 1 for case in cases]
    anomaly = [_read(maps / f"{case}_anomaly.nii.gz") for case in cases]
    threshold = json.loads((model.fold(0) / "threshold.json").read_text())["threshold"]
    pooled = np.concatenate([lab.ravel() for lab in labels])
    numbers = {"pixel_auprc": pixel_auprc(anomaly, labels),
               "dice": dice(np.concatenate([p.ravel() for p in predicted]), pooled),
               "prevalence": float(pooled.mean()), "threshold": float(threshold), "cases": len(cases)}
    return HeldOut(cases, labels, predicted, maps, numbers)


def _picture(raw: Path, cases: list[str], labels: list, predicted: list, maps: Path, path: Path) -> Path:
    rows = []
    for case, label, segmentation in list(zip(cases, labels, predicted))[:3]:
        index = busiest_slice(label) if label.ndim == 3 else None
        rows.append([Panel(as_slice(_read(raw / "imagesTs" / f"{case}_0000.nii.gz"), index), case),
                     Panel(as_slice(label, index), "lesions", "errors"),
                     Panel(as_slice(_read(maps / f"{case}_counterfactual.nii.gz"), index), "counterfactual"),
                     Panel(as_slice(_read(maps / f"{case}_anomaly.nii.gz"), index), "anomaly map", "map"),
                     Panel(as_slice(segmentation, index), "segmentation", "errors")])
    return write_picture(rows, path, "Held-out cases: image, lesions, pseudo-healthy counterfactual, map, segmentation")
