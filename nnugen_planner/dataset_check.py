"""Checks a raw dataset for what nnU-Net's integrity check cannot see: NaN / Inf voxels and cut-off or corrupt files.

SimpleITK 2.5 (nnU-Net's reader for ``.nii.gz``) reads NaN and +-Inf voxels of a NIfTI file as 0 and a truncated
``.nii.gz`` as zeros, both without an error, so ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity`` passes
such files. Here NIfTI files are read byte by byte: the header is parsed with nibabel's header classes, the gzip
stream is decompressed to its end (which also checks its CRC and length), and the voxel data are scanned in chunks
of bounded size, so memory stays small for any image size. Other formats are read with SimpleITK. The check of one
file is ``nnugen/folders/image_check.py``, which ``nnugen_predict`` shares.

Example::

    >>> problems = check_raw_dataset(Path("nnUNet_raw/Dataset004_Hippocampus"))  # doctest: +SKIP
    >>> for p in problems:  # doctest: +SKIP
    ...     print(p)
"""

import multiprocessing
import os
from pathlib import Path

from nnugen.folders.dataset_folders import InputError, load_json
from nnugen.folders.image_check import ImageProblem as DatasetProblem
from nnugen.folders.image_check import _nifti_header, _scaling, check_image_file  # noqa: F401 (tests read them here)

_PARALLEL_MIN_FILES = 8  # below this, starting worker processes costs more than it saves


def check_raw_dataset(dataset_folder: Path, num_processes: int = 2) -> list[DatasetProblem]:
    """Check every image and label file of an nnU-Net raw dataset (imagesTr, labelsTr, imagesTs, labelsTs).

    Reads ``file_ending`` from dataset.json; datasets that list their files in dataset.json's ``dataset`` entry are
    checked file by file as listed. Files are checked in ``num_processes`` worker processes when there are many.
    Returns the problems sorted by path; [] means nothing was found. Raises ``InputError`` (a ``ValueError``)
    when dataset.json is missing or unusable.
    """
    dataset_folder = Path(dataset_folder)
    json_file = dataset_folder / "dataset.json"
    dataset_json = load_json(json_file, "point to a raw dataset folder such as $nnUNet_raw/Dataset004_Hippocampus")
    if "file_ending" not in dataset_json:
        raise InputError(f"{json_file} has no 'file_ending' entry; add it (e.g. \".nii.gz\")")
    files, problems = _dataset_files(dataset_folder, dataset_json)
    if num_processes > 1 and len(files) >= _PARALLEL_MIN_FILES:
        # spawn, as nnU-Net does: forking a process that already runs threads (torch, SimpleITK) can deadlock.
        with multiprocessing.get_context("spawn").Pool(num_processes) as pool:
            per_file = pool.map(check_image_file, files, chunksize=max(1, len(files) // (4 * num_processes)))
    else:
        per_file = [check_image_file(f) for f in files]
    problems += [p for found in per_file for p in found]
    return sorted(problems, key=lambda p: str(p.path))


def _dataset_files(folder: Path, dataset_json: dict) -> tuple[list[Path], list[DatasetProblem]]:
    """The files to check and the problems found while listing them (a missing imagesTr / labelsTr folder)."""
    file_ending = dataset_json["file_ending"]
    if "dataset" in dataset_json:
        # nnU-Net resolves these relative to the dataset folder
        files = {Path(os.path.abspath(folder / os.path.expandvars(f))) for case in dataset_json["dataset"].values()
                 for f in [*case["images"], case["label"]]}
        return sorted(files), []
    files, problems = [], []
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        if (folder / sub).is_dir():
            files += sorted(p for p in (folder / sub).iterdir() if p.is_file() and p.name.endswith(file_ending))
        elif sub in ("imagesTr", "labelsTr"):
            problems.append(DatasetProblem(folder / sub, "folder is missing; nnU-Net needs imagesTr and labelsTr"))
    return files, problems
