"""``run_anomaly_demo``: counterfactual anomaly segmentation on healthy phantoms with inserted synthetic lesions,
through the real CLIs: write_lesion_dataset -> nnUNetv2_plan_and_preprocess -> nnugen_plan -> nnugen_train --task
anomaly (healthy cases only; the threshold is chosen on validation cases with lesions of the tuning families) ->
nnUNetv2_predict on held-out cases with lesions of other families (the segmentation) and nnugen_predict (the anomaly
maps) -> pixel AUPRC and Dice. The synthetic lesions check the machinery, not performance on real pathology."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nnugen.folders.model_folder import ModelFolder
from nnugen.tasks import TASKS

DATASET_ID = 993
DATASET_NAME = "nnugenLesions"
TRAINER = TASKS["anomaly"].trainer


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


def anomaly_demo_size(quick: bool) -> AnomalyDemoSize:
    if quick:
        return AnomalyDemoSize((32, 32, 32), 6, 2, 2, 1, 20, 4, 1)
    return AnomalyDemoSize((32, 32, 32), 10, 3, 4, 2, 40, 8, 4)


def _settings(size: AnomalyDemoSize) -> list[str]:
    """nnugen_plan --set flags: the run length, a small denoiser (the planned one takes ~5 s per 3D step on 2 CPU
    cores), DDIM steps per strength and seeds (fewer than the plans' 8, to keep the demo short)."""
    settings = (f"anomaly.training.epochs={size.epochs}", f"anomaly.training.iterations_per_epoch={size.iterations}",
                "anomaly.training.val_iterations_per_epoch=2", "anomaly.training.initial_lr=0.001",
                "anomaly.denoiser.features_per_stage=[16,32,64,128]", "anomaly.denoiser.attention_stages=[]",
                f"anomaly.sampler.steps={size.steps}", f"anomaly.sampler.seeds={size.seeds}")
    return [a for s in settings for a in ("--set", s)]


def _read(path: Path):
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def run_anomaly_demo(work_dir: Path, quick: bool, device: str, say: Callable[[str], None], log: Path) -> dict:
    """Run the demo in ``work_dir`` (nnUNet_* folders inside it unless set); commands' output goes to ``log``.
    Returns {"pixel_auprc", "dice", "threshold", "cases"} on the held-out lesion cases."""
    import numpy as np

    from nnugen.anomaly import dice, pixel_auprc
    from nnugen.atomic_files import atomic_write_json
    from nnugen.demo.commands import cli, run_logged, set_nnunet_folders
    from nnugen.demo.lesion_dataset import write_lesion_dataset
    from nnugen.demo.phantom import PhantomSpec
    from nnugen.demo.progress_follow import prediction_watch, training_watch

    size = anomaly_demo_size(quick)
    work_dir = Path(work_dir)
    folders = set_nnunet_folders(work_dir)
    folder = f"Dataset{DATASET_ID:03d}_{DATASET_NAME}"
    raw = Path(folders["nnUNet_raw"]) / folder
    if not (raw / "dataset.json").is_file():
        say(f"anomaly: writing {size.n_healthy} healthy phantoms, {size.n_val_lesion} with lesions to choose the "
            f"threshold and {size.n_test_lesion} held-out ones with lesions of other families "
            f"({'x'.join(map(str, size.shape))}, synthetic lesions: a check of the machinery, not of real pathology)")
        write_lesion_dataset(Path(folders["nnUNet_raw"]), DATASET_ID, DATASET_NAME, size.n_healthy, size.n_val_lesion,
                             size.n_test_lesion, seed=0, spec=PhantomSpec(shape=size.shape))
    say("anomaly: nnUNetv2_plan_and_preprocess (nnU-Net, unchanged)")
    run_logged([cli("nnUNetv2_plan_and_preprocess"), "-d", str(DATASET_ID), "-c", "3d_fullres", "-np", "2",
                "-npfp", "2", "--verify_dataset_integrity"], log)
    lesions = json.loads((raw / "dataset.json").read_text())["nnugen_lesions"]
    validation = sorted(case for case in lesions["lesion_families"] if (raw / "labelsTr" / f"{case}.nii.gz").is_file())
    # one fold: every healthy case trains, the lesion cases of imagesTr choose the threshold
    atomic_write_json(Path(folders["nnUNet_preprocessed"]) / folder / "splits_final.json",
                      [{"train": lesions["healthy_cases"], "val": validation}])
    say(f"anomaly: nnugen_plan ({size.epochs} epochs x {size.iterations} iterations, DDIM {size.steps} steps per "
        "strength)")
    run_logged([cli("nnugen_plan"), "-d", str(DATASET_ID), "-c", "3d_fullres", *_settings(size)], log)
    say(f"anomaly: nnugen_train {DATASET_ID} 0 3d --task anomaly -device {device} (healthy cases only; then the "
        "threshold on the validation lesions)")
    model = ModelFolder.of(folder, TRAINER, "3d_fullres", results=Path(folders["nnUNet_results"]))
    run_logged([cli("nnugen_train"), str(DATASET_ID), "0", "3d", "--task", "anomaly", "-device", device, "--seed",
                "0"], log, training_watch(model.fold(0)))

    segmentations, maps = work_dir / "predictions" / TRAINER, work_dir / "predictions" / f"{TRAINER}_maps"
    for output in (segmentations, maps):
        shutil.rmtree(output, ignore_errors=True)
    common = ["-d", str(DATASET_ID), "-c", "3d_fullres", "-f", "0", "-tr", TRAINER, "-p", "nnugenPlans", "-i",
              str(raw / "imagesTs"), "-device", device, "-npp", "0", "-nps", "0"]
    say(f"anomaly: nnUNetv2_predict -tr {TRAINER} on {size.n_test_lesion} held-out cases (lesion segmentation)")
    run_logged([cli("nnUNetv2_predict"), *common, "-o", str(segmentations), "--disable_tta"], log,
               prediction_watch(raw / "imagesTs", segmentations))
    say(f"anomaly: nnugen_predict -tr {TRAINER} (anomaly maps and pseudo-healthy counterfactuals)")
    run_logged([cli("nnugen_predict"), *common, "-o", str(maps), "--seed", "0"], log,
               prediction_watch(raw / "imagesTs", maps))

    cases = sorted(p.name[: -len(".nii.gz")] for p in (raw / "labelsTs").glob("*.nii.gz"))
    labels = [_read(raw / "labelsTs" / f"{case}.nii.gz") > 0 for case in cases]
    predicted = [_read(segmentations / f"{case}.nii.gz") == 1 for case in cases]
    anomaly = [_read(maps / f"{case}_anomaly.nii.gz") for case in cases]
    threshold = json.loads((model.fold(0) / "threshold.json").read_text())["threshold"]
    pooled = np.concatenate([lab.ravel() for lab in labels])
    result = {"pixel_auprc": pixel_auprc(anomaly, labels),
              "dice": dice(np.concatenate([p.ravel() for p in predicted]), pooled),
              "prevalence": float(pooled.mean()), "threshold": float(threshold), "cases": len(cases)}
    say(f"anomaly: on {len(cases)} held-out cases: pixel AUPRC {result['pixel_auprc']:.3f} (lesion prevalence "
        f"{result['prevalence']:.3f}, what a map without information scores), Dice {result['dice']:.3f} at the "
        f"threshold {threshold:.4g}; maps and counterfactuals in {maps}")
    return result
