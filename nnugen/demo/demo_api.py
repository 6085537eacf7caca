"""``run_demo``: the whole nnugen pipeline on datasets made on the spot, through the real CLIs, in three parts, then
one page that shows them (``nnugen_work/report.html`` and ``report.png``, report.py):

- ``seg`` (segmentation_demo.py): nnU-Net's baseline and the diffusion segmenter, same plan and budget, on held-out
  cases: Dice and HD95 per class of both, and how well each one's uncertainty finds its own errors;
- ``generation`` (generation_demo.py): a small DDPM of images with their label maps on the same dataset, its samples
  next to real cases, their distance to real against noise's, and whether their labels match their images;
- ``anomaly`` (anomaly_demo.py): a model of healthy cases only finds inserted lesions as the difference to its
  pseudo-healthy counterfactual: pixel AUPRC against the lesion prevalence, and Dice.

Each part ends with capability checks (a claim, the number it measured, the bar it needed); a failed check is named
on the page and in the demo's last lines instead of passing silently. 2D phantoms by default (3D adds nothing to what
the demo shows, and costs minutes): ``--3d`` for 3D phantoms, ``--real`` for brain-middle axial slices of the MNI152
template's augmented volumes (``--real --3d``: the whole 3 mm volumes, about 43 minutes, and its 3D generator does not
learn the anatomy in that budget).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from nnugen.demo.commands import Stages, cli, run_logged, set_nnunet_folders
from nnugen.demo.preloaded_commands import start_forkserver
from nnugen.demo.report import Section, failed_checks, write_report

DATASET_ID = 990
DATASET_NAME = "nnugenPhantom"
PARTS = ("seg", "generation", "anomaly")
TEST_STRIDE = 3
"""``--real`` in 2D holds out every third brain-middle slice of its test volumes (neighbouring 3 mm slices are
nearly alike; a third of them scores the same anatomy at a third of the prediction time)."""


@dataclass(frozen=True)
class DemoRequest:
    work_dir: Path = Path("nnugen_work")
    three_d: bool = False
    quick: bool = False
    device: str = "cpu"
    real: bool = False
    parts: tuple[str, ...] = PARTS

    def __post_init__(self) -> None:
        unknown = [p for p in self.parts if p not in PARTS]
        if unknown or not self.parts:
            raise ValueError(f"demo parts {', '.join(unknown) or '(none)'}: choose from {', '.join(PARTS)}")

    @property
    def configuration(self) -> str:
        return "3d_fullres" if self.three_d else "2d"


@dataclass(frozen=True)
class DemoSize:
    shape: tuple[int, ...]
    n_train: int
    n_test: int
    """Cases; for ``--real`` in 2D, volumes (every slice of a training volume, every TEST_STRIDE-th of a test one)."""
    epochs: int
    iterations: int


def demo_size(request: DemoRequest) -> DemoSize:
    """The segmentation dataset and the budget both segmenters train with."""
    if request.real and request.three_d:  # 3 mm MNI152 crops are about 54 x 65 x 52 voxels
        return DemoSize((), 10, 3, 2 if request.quick else 6, 10 if request.quick else 20)
    if request.real:  # about 31 brain-middle axial slices of 65 x 52 pixels per volume
        return DemoSize((), 4, 1, 4, 20) if request.quick else DemoSize((), 8, 2, 10, 25)
    if request.three_d:
        return DemoSize((32, 32, 32), 8, 2, 2, 10) if request.quick else DemoSize((48, 48, 48), 12, 4, 6, 20)
    if request.quick:
        return DemoSize((64, 64), 8, 4, 4, 20)
    return DemoSize((64, 64), 12, 4, 10, 25)


def run_demo(request: DemoRequest) -> dict[str, dict[str, float]]:
    """Run the chosen parts and write the report; returns {part: its measured numbers} and {"report": {path: 1}}."""
    say = Stages()
    work_dir = Path(request.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    folders = set_nnunet_folders(work_dir)
    log = work_dir / "demo_log.txt"
    start_forkserver()  # its imports run while the first dataset is written (preloaded_commands.py)
    say(f"work folder {work_dir.resolve()} (commands and their output: {log})")
    for variable, value in folders.items():
        say(f"  {variable}={value}")
    started = time.monotonic()
    sections: dict[str, Section] = {}
    if "seg" in request.parts or "generation" in request.parts:
        dataset_id, raw, labels = _prepared_dataset(request, Path(folders["nnUNet_raw"]), say, log)
        size = demo_size(request)
        budget = f"{size.epochs} epochs x {size.iterations} iterations"
        if "seg" in request.parts:
            from nnugen.demo.segmentation_demo import run_segmentation_demo

            sections["seg"] = run_segmentation_demo(dataset_id, request.configuration, raw, labels, work_dir, budget,
                                                    request.device, say, log)
        if "generation" in request.parts:
            from nnugen.demo.generation_demo import generation_budget, run_generation_demo

            generator = generation_budget(request.quick, three_d=request.configuration != "2d")
            sections["generation"] = run_generation_demo(dataset_id, request.configuration, raw, labels, work_dir,
                                                         generator, request.device, say, log)
    if "anomaly" in request.parts:
        from nnugen.demo.anomaly_demo import anomaly_demo_size, run_anomaly_demo

        # --real's anomaly part is 2D (MNI152 slices) with --3d too: 3D phantoms at a budget of minutes did not
        # reach the Dice check (0.10 at 2 x 40 iterations, 0.18 at 4 x 60; 2026-12-05)
        size = anomaly_demo_size(request.quick, three_d=request.three_d and not request.real, real=request.real)
        sections["anomaly"] = run_anomaly_demo(work_dir, size, request.device, say, log)
    page = write_report(work_dir, list(sections.values()), time.monotonic() - started)
    say(f"report: {page.resolve()} (a picture of it: {page.with_suffix('.png').resolve()})")
    failed = failed_checks(list(sections.values()))
    for line in failed:
        say(f"check {line}")
    say(f"{len(failed)} capability check(s) failed; see the report" if failed else "every capability check passed")
    return {**{part: section.numbers for part, section in sections.items()}, "report": {str(page): 1.0}}


def _dataset(request: DemoRequest) -> tuple[int, str]:
    """The segmentation dataset's ID and name: one per kind, so that work folders can hold them all."""
    if request.real:
        return (DATASET_ID + 2, "nnugenMNI152") if request.three_d else (DATASET_ID + 4, "nnugenMNI152Slices")
    return DATASET_ID + (0 if request.three_d else 1), f"{DATASET_NAME}{'3D' if request.three_d else '2D'}"


def _prepared_dataset(request: DemoRequest, raw_root: Path, say, log: Path) -> tuple[int, Path, dict[str, int]]:
    """The segmentation dataset written (once), preprocessed by nnU-Net and planned by nnugen with the demo's budget
    for both segmenters; returns (ID, raw folder, labels)."""
    from nnugen.demo.mni_dataset import LABELS as MNI_LABELS
    from nnugen.demo.mni_dataset import PROVENANCE, write_mni_dataset, write_mni_slice_dataset
    from nnugen.demo.phantom import LABELS, PhantomSpec, write_phantom_dataset

    size = demo_size(request)
    dataset_id, name = _dataset(request)
    raw = raw_root / f"Dataset{dataset_id:03d}_{name}"
    if request.real:
        say(PROVENANCE)
    if request.real and request.three_d and not (raw / "dataset.json").is_file():
        say(f"writing {size.n_train} + {size.n_test} augmented copies of the MNI152 template (3 mm)")
        write_mni_dataset(raw_root, dataset_id, name, size.n_train, size.n_test, seed=0)
    elif request.real and not (raw / "dataset.json").is_file():
        say(f"writing the brain-middle axial slices of {size.n_train} + {size.n_test} augmented copies of the MNI152 "
            f"template (3 mm; every slice of a training copy, one in {TEST_STRIDE} of a held-out one)")
        write_mni_slice_dataset(raw_root, dataset_id, name, size.n_train, size.n_test, axis=0,
                                test_stride=TEST_STRIDE, seed=0)
    elif not (raw / "dataset.json").is_file():
        say(f"writing {size.n_train} + {size.n_test} procedural phantom scans {'x'.join(map(str, size.shape))} "
            "(synthetic anatomy: body, organ, lesion; MRI-like intensities, bias field, noise)")
        write_phantom_dataset(raw_root, dataset_id, name, size.n_train, size.n_test,
                              spec=PhantomSpec(shape=size.shape), seed=0)
    say("nnUNetv2_plan_and_preprocess (nnU-Net, unchanged)")
    # no --verify_dataset_integrity: the datasets written here pass it in tests/demo, and its pool costs 3 s
    run_logged([cli("nnUNetv2_plan_and_preprocess"), "-d", str(dataset_id), "-c", request.configuration, "-np", "2",
                "-npfp", "2"], log)
    length = []
    for task in ("baseline", "segmentation"):
        length += ["--set", f"{task}.training.epochs={size.epochs}",
                   "--set", f"{task}.training.iterations_per_epoch={size.iterations}",
                   "--set", f"{task}.training.val_iterations_per_epoch={max(1, size.iterations // 5)}"]
    say(f"nnugen_plan (the same budget for both segmenters: {size.epochs} epochs x {size.iterations} iterations)")
    run_logged([cli("nnugen_plan"), "-d", str(dataset_id), "-c", request.configuration, *length], log)
    return dataset_id, raw, MNI_LABELS if request.real else LABELS
