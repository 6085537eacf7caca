"""``run_segmentation_demo``: the demo's segmentation part, on a dataset the demo has planned and preprocessed.

nnU-Net's own trainer (``--task baseline``) and the diffusion segmenter (``--task seg``) train with the same plan and
budget; ``nnUNetv2_predict`` (with ``--save_probabilities``, for the softmax entropy) and ``nnugen_predict`` (an
ensemble of seeds with its entropy and variance images) segment the held-out cases; ``nnugen_evaluate`` scores both
folders with nnU-Net's statistics, HD95, and how well each model's uncertainty finds its own wrong voxels. The
section for the report holds both tables, a picture (image, reference, both predictions, the diffusion model's
errors and its ensemble's entropy) and the checks: every class found by both models, and the ensemble's uncertainty
sitting where its errors are.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from nnugen.demo.commands import cli, log_size, logged_commands, run_logged
from nnugen.demo.evaluation import format_table
from nnugen.demo.pictures import Panel, as_slice, busiest_slice, write_picture
from nnugen.demo.progress_follow import prediction_watch, training_watch
from nnugen.demo.report import Section, at_least
from nnugen.folders.model_folder import ModelFolder
from nnugen.tasks import TASKS

ENSEMBLE = 3
"""Seeds averaged by the diffusion model's prediction, and the source of its uncertainty images."""
FOUND_DICE = 0.5
"""A class counts as found when a model's mean Dice on it reaches this."""
ERROR_AUROC = 0.8
"""The ensemble's entropy must rank the wrong voxels above the right ones at least this well (0.5: by chance)."""
TITLES = {"baseline": "nnU-Net", "seg": f"diffusion ({ENSEMBLE} seeds)"}


def run_segmentation_demo(dataset_id: int, configuration: str, raw: Path, labels: dict[str, int], work_dir: Path,
                          budget: str, device: str, say, log: Path) -> Section:
    """Train, predict, evaluate and draw; ``budget`` says the shared training budget in words."""
    since = log_size(log)
    short = "3d" if configuration == "3d_fullres" else configuration
    folders: dict[str, Path] = {}
    for task in ("baseline", "seg"):
        trainer = TASKS[task].trainer
        say(f"nnugen_train {dataset_id} 0 {short} --task {task} -device {device} ({TITLES[task]}, {budget})")
        run_logged([cli("nnugen_train"), str(dataset_id), "0", short, "--task", task, "-device", device, "--seed",
                    "0"], log, training_watch(ModelFolder.of(dataset_id, trainer, configuration).fold(0)))
        output = folders[task] = work_dir / "predictions" / trainer
        shutil.rmtree(output, ignore_errors=True)
        common = ["-d", str(dataset_id), "-c", configuration, "-f", "0", "-tr", trainer, "-i", str(raw / "imagesTs"),
                  "-o", str(output), "-device", device, "-npp", "0", "-nps", "0"]
        if task == "baseline":
            say(f"nnUNetv2_predict -tr {trainer} --save_probabilities on the held-out cases")
            command = [cli("nnUNetv2_predict"), *common, "-p", "nnugenPlans", "--disable_tta", "--save_probabilities"]
        else:
            say(f"nnugen_predict -tr {trainer} --ensemble-size {ENSEMBLE} --save-uncertainty on the held-out cases")
            command = [cli("nnugen_predict"), *common, "--ensemble-size", str(ENSEMBLE), "--seed", "0",
                       "--save-uncertainty"]
        run_logged(command, log, prediction_watch(raw / "imagesTs", output))
        say(f"nnugen_evaluate {raw / 'labelsTs'} {output}")
        run_logged([cli("nnugen_evaluate"), str(raw / "labelsTs"), str(output), "-np", "1"], log)

    scores = {TITLES[task]: _per_class(folder, labels) for task, folder in folders.items()}
    detection = {task: _error_detection(folder) for task, folder in folders.items()}
    dice = {title: {name: values["Dice"] for name, values in per_class.items()} for title, per_class in scores.items()}
    hd95 = {title: {name: values["HD95"] for name, values in per_class.items()} for title, per_class in scores.items()}
    cases = sorted(raw.joinpath("labelsTs").glob("*.nii.gz"))
    section = Section("Segmentation: nnU-Net and diffusion, same plan and budget")
    section.lines += [
        f"{len(cases)} held-out cases; both models trained on fold 0 of the training cases with {budget}. The "
        f"diffusion model's prediction is the mean of {ENSEMBLE} seeds; the spread of the seeds is its uncertainty.",
        _detection_sentence(detection)]
    section.tables += [("Dice per class (nnU-Net's summary.json, higher is better)", format_table(dice)),
                       ("HD95 per class in mm (lower is better)", format_table(hd95))]
    section.checks += [at_least(f"{title} finds {name} (Dice)", values[name], FOUND_DICE)
                       for title, values in dice.items() for name in values]
    section.checks.append(at_least("the ensemble's entropy sits where its errors are (error-detection AUROC)",
                                   detection["seg"]["auroc"], ERROR_AUROC))
    section.pictures.append(_picture(cases, raw, folders, len(labels), work_dir / "pictures" / "segmentation.png"))
    section.numbers.update({f"dice/{title}/{name}": v for title, values in dice.items() for name, v in values.items()})
    section.numbers.update({f"error_{key}/{task}": detection[task][key] for task in detection
                            for key in ("auroc", "auprc")})
    section.commands += logged_commands(log, since)
    say("segmentation: nnU-Net's Dice per class on the held-out cases:")
    print(format_table(dice), flush=True)
    say(_detection_sentence(detection))
    return section


def _per_class(folder: Path, labels: dict[str, int]) -> dict[str, dict[str, float]]:
    """{class: {"Dice": ..., "HD95": ...}} from nnugen_evaluate's summary.json and distances_summary.json."""
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))["mean"]
    distances = json.loads((folder / "distances_summary.json").read_text(encoding="utf-8"))["mean"]
    names = {str(value): name for name, value in labels.items() if value != 0}
    return {name: {"Dice": _number(summary.get(key, {}).get("Dice")),
                   "HD95": _number(distances.get(key, {}).get("HD95"))} for key, name in names.items()}


def _number(value) -> float:
    return math.nan if value is None else float(value)


def _error_detection(folder: Path) -> dict[str, float]:
    """Pooled AUROC / AUPRC of the entropy for the wrong voxels (uncertainty_summary.json)."""
    pooled = json.loads((folder / "uncertainty_summary.json").read_text(encoding="utf-8"))["pooled"]["entropy"]
    return {"auroc": _number(pooled["auroc"]), "auprc": _number(pooled["auprc"]),
            "error_rate": pooled["errors"] / max(pooled["voxels"], 1)}


def _detection_sentence(detection: dict[str, dict[str, float]]) -> str:
    seg, base = detection["seg"], detection["baseline"]
    return (f"Finding its own wrong voxels (pooled over the held-out cases): the diffusion ensemble's entropy AUROC "
            f"{seg['auroc']:.3f}, AUPRC {seg['auprc']:.3f} (error rate {seg['error_rate']:.4f}); nnU-Net's softmax "
            f"entropy AUROC {base['auroc']:.3f}, AUPRC {base['auprc']:.3f} (error rate {base['error_rate']:.4f}). "
            "An AUPRC equal to the error rate is what a map without information scores.")


def _picture(cases: list[Path], raw: Path, folders: dict[str, Path], classes: int, path: Path) -> Path:
    import SimpleITK as sitk

    def read(file: Path):
        return sitk.GetArrayFromImage(sitk.ReadImage(str(file)))

    rows = []
    for reference_file in cases[:2]:
        case = reference_file.name[: -len(".nii.gz")]
        reference = read(reference_file)
        index = busiest_slice(reference > 0) if reference.ndim == 3 else None
        baseline = read(folders["baseline"] / reference_file.name)
        diffusion = read(folders["seg"] / reference_file.name)
        rows.append([
            Panel(as_slice(read(raw / "imagesTs" / f"{case}_0000.nii.gz"), index), case),
            Panel(as_slice(reference, index), "reference", "label", classes),
            Panel(as_slice(baseline, index), "nnU-Net", "label", classes),
            Panel(as_slice(diffusion, index), "diffusion", "label", classes),
            Panel(as_slice(diffusion != reference, index), "diffusion's errors", "errors"),
            Panel(as_slice(read(folders["seg"] / f"{case}_entropy.nii.gz"), index), "ensemble entropy", "map")])
    return write_picture(rows, path, "Held-out cases: the ensemble's entropy is high where the diffusion model errs")
