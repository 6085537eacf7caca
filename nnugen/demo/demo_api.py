"""``run_demo``: the whole nnugen pipeline on phantom datasets made on the spot, through the real CLIs, in three
parts:

- ``seg``: nnUNetv2_plan_and_preprocess -> nnugen_plan -> nnugen_train (nnU-Net baseline, diffusion segmentation)
  -> nnUNetv2_predict / nnugen_predict on held-out cases -> Dice per class of both, side by side, and uncertainty
  images;
- ``generation``: a small DDPM (image + label together) on the same dataset -> nnugen_sample with previews;
- ``anomaly``: a healthy-only diffusion model on its own phantoms -> lesions found as the difference to the
  pseudo-healthy counterfactual, through nnUNetv2_predict, with pixel AUPRC and Dice."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from nnugen.demo.commands import Stages, cli, run_logged, set_nnunet_folders
from nnugen.demo.evaluation import dice_and_hd95_per_class, format_table
from nnugen.demo.mni_dataset import LABELS as MNI_LABELS
from nnugen.demo.mni_dataset import PROVENANCE, write_mni_dataset
from nnugen.demo.phantom import LABELS, PhantomSpec, write_phantom_dataset
from nnugen.demo.progress_follow import prediction_watch, training_watch
from nnugen.folders.model_folder import ModelFolder
from nnugen.tasks import TASKS

DATASET_ID = 990
DATASET_NAME = "nnugenPhantom"
ENSEMBLE = 3  # seeds averaged by the diffusion model's prediction, and the source of its uncertainty images
PARTS = ("seg", "generation", "anomaly")


@dataclass(frozen=True)
class DemoRequest:
    work_dir: Path = Path("nnugen_work")
    two_d: bool = False
    quick: bool = False
    device: str = "cpu"
    real: bool = False
    parts: tuple[str, ...] = PARTS

    def __post_init__(self) -> None:
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown or not self.parts:
            raise ValueError(f"demo parts {', '.join(unknown) or '(none)'}: choose from {', '.join(PARTS)}")


@dataclass(frozen=True)
class DemoSize:
    shape: tuple[int, ...]
    n_train: int
    n_test: int
    epochs: int
    iterations: int


def demo_size(request: DemoRequest) -> DemoSize:
    if request.real:  # 3 mm MNI152 crops are about 54 x 65 x 52 voxels
        return DemoSize((), 10, 3, 2 if request.quick else 6, 10 if request.quick else 20)
    if request.two_d:
        return DemoSize((96, 96), 12, 4, 2 if request.quick else 8, 10 if request.quick else 25)
    if request.quick:
        return DemoSize((32, 32, 32), 8, 2, 2, 10)
    return DemoSize((48, 48, 48), 12, 4, 6, 20)


def run_demo(request: DemoRequest) -> dict[str, dict]:
    """Run the chosen parts; returns {model: {class: Dice}} for ``seg``, plus {"generation": {"samples": folder}}
    and {"anomaly": {metric: value}} for those parts."""
    say = Stages()
    work_dir = Path(request.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    folders = set_nnunet_folders(work_dir)
    log = work_dir / "demo_log.txt"
    size = demo_size(request)
    configuration = "2d" if request.two_d else "3d_fullres"
    dataset_id = DATASET_ID + (2 if request.real else 1 if request.two_d else 0)
    name = "nnugenMNI152" if request.real else f"{DATASET_NAME}{'2D' if request.two_d else '3D'}"
    labels = MNI_LABELS if request.real else LABELS
    raw = Path(folders["nnUNet_raw"]) / f"Dataset{dataset_id:03d}_{name}"
    say(f"work folder {work_dir.resolve()} (commands and their output: {log})")
    for variable, value in folders.items():
        say(f"  {variable}={value}")
    results: dict[str, dict] = {}
    if "seg" not in request.parts and "generation" not in request.parts:
        return _anomaly_part(request, work_dir, say, log, results)

    if request.real:
        say(PROVENANCE)
    if request.real and not (raw / "dataset.json").is_file():
        say(f"writing {size.n_train} + {size.n_test} augmented copies of the MNI152 template (3 mm)")
        write_mni_dataset(Path(folders["nnUNet_raw"]), dataset_id, name, size.n_train, size.n_test, seed=0)
    elif not (raw / "dataset.json").is_file():
        say(f"writing {size.n_train} + {size.n_test} procedural phantom scans {'x'.join(map(str, size.shape))} "
            "(synthetic anatomy: body, organ, lesion; MRI-like intensities, bias field, noise)")
        write_phantom_dataset(Path(folders["nnUNet_raw"]), dataset_id, name, size.n_train, size.n_test,
                              spec=PhantomSpec(shape=size.shape), seed=0)
    say("nnUNetv2_plan_and_preprocess (nnU-Net, unchanged)")
    run_logged([cli("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", configuration, "-np", "2",
                "-npfp", "2", "--verify_dataset_integrity"], log)
    length = []
    for task in ("baseline", "segmentation"):
        length += ["--set", f"{task}.training.epochs={size.epochs}",
                   "--set", f"{task}.training.iterations_per_epoch={size.iterations}",
                   "--set", f"{task}.training.val_iterations_per_epoch={max(1, size.iterations // 5)}"]
    say(f"nnugen_plan (same budget for both: {size.epochs} epochs x {size.iterations} iterations)")
    run_logged([cli("nnugen_plan"), "-d", str(dataset_id), "-c", configuration, *length], log)

    if "seg" in request.parts:
        _segmentation_part(request, dataset_id, configuration, raw, size, labels, work_dir, say, log, results)
    if "generation" in request.parts:
        from nnugen.demo.generation_demo import run_generation_demo

        samples = run_generation_demo(dataset_id, configuration, raw, work_dir, request.quick, request.device, say,
                                      log)
        results["generation"] = {"samples": str(samples)}
    return _anomaly_part(request, work_dir, say, log, results)


def _anomaly_part(request: DemoRequest, work_dir: Path, say, log: Path, results: dict) -> dict:
    if "anomaly" in request.parts:
        from nnugen.demo.anomaly_demo import run_anomaly_demo

        results["anomaly"] = run_anomaly_demo(work_dir, request.quick, request.device, say, log)
    return results


def _segmentation_part(request: DemoRequest, dataset_id: int, configuration: str, raw: Path, size: DemoSize,
                       labels: dict, work_dir: Path, say, log: Path, results: dict) -> None:
    """nnU-Net's baseline and the diffusion segmenter, same plan and budget; prints both Dice tables."""
    short = "3d" if configuration == "3d_fullres" else configuration
    scores: dict[str, dict[str, float]] = {}
    distances: dict[str, dict[str, float]] = {}
    for task, title in (("baseline", "nnU-Net baseline"), ("seg", f"diffusion (5 steps x {ENSEMBLE} seeds)")):
        trainer = TASKS[task].trainer
        say(f"nnugen_train {dataset_id} 0 {short} --task {task} -device {request.device}")
        run_logged([cli("nnugen_train"), str(dataset_id), "0", short, "--task", task, "-device", request.device,
                    "--seed", "0"], log, training_watch(ModelFolder.of(dataset_id, trainer, configuration).fold(0)))
        output = work_dir / "predictions" / trainer
        if output.exists():
            shutil.rmtree(output)
        if task == "baseline":
            say(f"nnUNetv2_predict -tr {trainer} on {size.n_test} held-out cases")
            run_logged([cli("nnUNetv2_predict"), "-d", str(dataset_id), "-c", configuration, "-f", "0", "-tr",
                        trainer, "-p", "nnugenPlans", "-i", str(raw / "imagesTs"), "-o", str(output), "-device",
                        request.device, "--disable_tta", "-npp", "0", "-nps", "0"], log,
                       prediction_watch(raw / "imagesTs", output))
        else:
            say(f"nnugen_predict -tr {trainer} --ensemble-size {ENSEMBLE} --save-uncertainty on {size.n_test} "
                "held-out cases")
            run_logged([cli("nnugen_predict"), "-d", str(dataset_id), "-c", configuration, "-f", "0", "-tr",
                        trainer, "-i", str(raw / "imagesTs"), "-o", str(output), "-device", request.device,
                        "--ensemble-size", str(ENSEMBLE), "--seed", "0", "--save-uncertainty", "-npp", "0", "-nps",
                        "0"], log, prediction_watch(raw / "imagesTs", output))
            maps = sorted(output.glob("*_entropy.nii.gz"))
            say(f"uncertainty images (entropy of the {ENSEMBLE}-seed ensemble, variance across seeds): "
                f"{len(maps)} cases, e.g. {maps[0] if maps else 'none'}")
        scores[title], distances[title] = dice_and_hd95_per_class(output, raw / "labelsTs", labels)
    cases = "augmented MNI152 cases" if request.real else "phantoms"
    say(f"segmentation done. nnU-Net's Dice per class on the {size.n_test} held-out {cases}:")
    print(format_table(scores), flush=True)
    say("HD95 per class in mm (95th percentile of the surface distances, lower is better):")
    print(format_table(distances), flush=True)
    results.update(scores)
