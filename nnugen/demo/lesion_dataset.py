"""An nnU-Net v2 raw dataset of phantom cases (``nnugen.demo.phantom``) with synthetic lesions
(``nnugen.anomaly.synthetic_lesions``), for counterfactual anomaly segmentation.

Healthy training cases have all-zero labels (listed in ``healthy_cases.txt``), validation cases tuning-family lesions
in imagesTr / labelsTr, and test cases test-family lesions in imagesTs / labelsTs; labels {background 0, lesion 1}.
The phantom's own "organ" and "lesion" structures are part of every case, so they are normal anatomy here; only the
inserted lesions are labelled. nnU-Net 2.8.1's fingerprint extraction crashes on a dataset whose labels are all
background; the validation lesion cases in imagesTr carry foreground, so the dataset as a whole has some (hence at
least one validation case is required).

With ``anatomy_channel=True`` every case gets one more input channel, last: the body mask in which lesions are placed
(1 inside, 0 outside; the same mask for healthy cases), for ``anomaly.condition_channel``. nnU-Net picks a channel's
normalisation from its name, so the channel is named ``noNorm`` (``ANATOMY_CHANNEL``): preprocessing then resamples
it but leaves its values alone.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np

from nnugen.anomaly.anomaly_map import body_mask
from nnugen.anomaly.healthy_cases import HEALTHY_CASES_FILE
from nnugen.anomaly.synthetic_lesions import TEST_FAMILIES, TUNING_FAMILIES, insert_lesions
from nnugen.atomic_files import atomic_write_text
from nnugen.demo.phantom import PhantomSpec, make_phantom_case, write_phantom_image
from nnugen.folders.dataset_json import write_dataset_json

LESION_LABELS = {"background": 0, "lesion": 1}
ANATOMY_CHANNEL = "noNorm"


def write_lesion_dataset(raw_root: str | os.PathLike, dataset_id: int, name: str, n_healthy_train: int,
                         n_val_lesion: int, n_test_lesion: int, seed: int = 0, spec: PhantomSpec | None = None,
                         *, overwrite: bool = False, anatomy_channel: bool = False) -> Path:
    """Write ``Dataset{dataset_id:03d}_{name}`` (see the module docstring) under ``raw_root``; returns the folder.

    Cases are numbered healthy, then validation, then test; case i's anatomy depends only on (seed, i) and
    ``spec`` (as in write_phantom_dataset), its lesions on (seed, i, 1). Validation cases cycle through
    TUNING_FAMILIES, test cases through TEST_FAMILIES; dataset.json's ``nnugen_lesions`` records which case got
    which family. The dataset is built in a hidden temporary folder and renamed into place, files atomically.
    ``anatomy_channel``: also write the body mask the lesions are placed in, as a last channel (see the module
    docstring).
    """
    spec = PhantomSpec() if spec is None else spec
    raw_root = Path(raw_root)
    folder = _dataset_folder(raw_root, dataset_id, name, n_healthy_train, n_val_lesion, n_test_lesion, overwrite)
    raw_root.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    temporary = raw_root / f".{folder.name}.tmp-{token}"
    temporary.mkdir()
    n_train = n_healthy_train + n_val_lesion
    healthy, families = [], {}
    try:
        for index in range(n_train + n_test_lesion):
            case = f"{name}_{index:03d}"
            family = _lesion_family(index, n_healthy_train, n_train)
            if family is None:
                healthy.append(case)
            else:
                families[case] = family
            _write_case(temporary, case, spec, (seed, index), family, index < n_train, anatomy_channel)
        atomic_write_text(temporary / HEALTHY_CASES_FILE, "".join(f"{case}\n" for case in healthy))
        write_dataset_json(temporary, **_dataset_json(name, spec, seed, n_train, n_test_lesion, healthy, families,
                                                      anatomy_channel))
        previous = raw_root / f".{folder.name}.old-{token}"
        if folder.exists():
            os.replace(folder, previous)
        os.replace(temporary, folder)
        shutil.rmtree(previous, ignore_errors=True)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return folder


def _dataset_folder(raw_root: Path, dataset_id: int, name: str, n_healthy_train: int, n_val_lesion: int,
                    n_test_lesion: int, overwrite: bool) -> Path:
    """The dataset's folder under ``raw_root``. ValueError for a bad argument or a dataset ID another folder uses,
    FileExistsError for an existing folder without ``overwrite``."""
    if not 1 <= dataset_id <= 999:
        raise ValueError(f"dataset_id must be between 1 and 999 (nnU-Net's three digits), got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise ValueError(f"name must be letters, digits, '-' or '_' (e.g. 'Lesions'), got {name!r}")
    if n_healthy_train < 1 or n_val_lesion < 1 or n_test_lesion < 0:
        raise ValueError(f"need n_healthy_train >= 1, n_val_lesion >= 1 (nnU-Net needs some foreground in imagesTr) "
                         f"and n_test_lesion >= 0; got {n_healthy_train}, {n_val_lesion}, {n_test_lesion}")
    folder = raw_root / f"Dataset{dataset_id:03d}_{name}"
    clashes = [p.name for p in raw_root.glob(f"Dataset{dataset_id:03d}_*") if p != folder] if raw_root.is_dir() else []
    if clashes:
        raise ValueError(f"{raw_root} already holds {clashes} with dataset ID {dataset_id}; nnU-Net needs unique IDs, "
                         "so pick another dataset_id or remove that folder")
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} exists; pass overwrite=True to rewrite it or delete it first")
    return folder


def _lesion_family(index: int, n_healthy_train: int, n_train: int) -> str | None:
    """The lesion family of case ``index``: None for the healthy training cases (the first ``n_healthy_train``), then
    validation cases (up to ``n_train``) cycle through TUNING_FAMILIES and test cases through TEST_FAMILIES."""
    if index < n_healthy_train:
        return None
    k = index - (n_healthy_train if index < n_train else n_train)
    return (TUNING_FAMILIES if index < n_train else TEST_FAMILIES)[k % 2]


def _write_case(folder: Path, case: str, spec: PhantomSpec, case_seed: tuple[int, int], family: str | None,
                training: bool, anatomy_channel: bool) -> None:
    """One case's image files (one per channel) and label file under ``folder``, in imagesTr / labelsTr when
    ``training``, else imagesTs / labelsTs. The anatomy comes from ``case_seed`` (dataset seed, case index), the lesions
    of ``family`` from (seed, case index, 1); no family: a healthy case with an all-zero label."""
    images, _anatomy = make_phantom_case(spec, np.random.default_rng(list(case_seed)))
    image = np.stack(images)
    body = body_mask(image[None])[0, 0]
    if family is None:
        label = np.zeros(spec.shape, np.uint8)
    else:
        image, label = insert_lesions(image, body, np.random.default_rng([*case_seed, 1]), family)
    if anatomy_channel:
        image = np.concatenate([image, body[None].astype(image.dtype)])
    images_dir, labels_dir = ("imagesTr", "labelsTr") if training else ("imagesTs", "labelsTs")
    for channel, array in enumerate(image):
        write_phantom_image(array, spec, folder / images_dir / f"{case}_{channel:04d}.nii.gz")
    write_phantom_image(label, spec, folder / labels_dir / f"{case}.nii.gz")


def _dataset_json(name: str, spec: PhantomSpec, seed: int, n_train: int, n_test_lesion: int, healthy: list[str],
                  families: dict[str, str], anatomy_channel: bool) -> dict:
    """``write_dataset_json``'s arguments for dataset.json, with ``nnugen_lesions`` recording the healthy cases and
    which case got which lesion family."""
    channel_names = dict(spec.channel_names)
    if anatomy_channel:
        channel_names[str(len(channel_names))] = ANATOMY_CHANNEL
    return {
        "channel_names": channel_names,
        "labels": dict(LESION_LABELS),
        "num_training": n_train,
        "file_ending": ".nii.gz",
        "overwrite_image_reader_writer": "SimpleITKIO",
        "dataset_name": name,
        "description": "Phantom MRI with synthetic lesions (nnugen.demo.lesion_dataset): healthy training "
                       "cases (healthy_cases.txt), validation and test cases with lesions of different families",
        "reference": "nnugen.demo.lesion_dataset.write_lesion_dataset",
        "license": "CC0",
        "nnugen_lesions": lesions_entry(seed, n_test_lesion, healthy, families, spec=asdict(spec)),
    }


def lesions_entry(seed: int, n_test_lesion: int, healthy: list[str], families: dict[str, str], **extra) -> dict:
    """dataset.json's ``nnugen_lesions``: the healthy cases (held-out ones last), which case got which lesion family
    (cases in labelsTr: tuning families, the others test families) and ``extra`` (how the anatomy was made)."""
    return {"seed": seed, "numTest": n_test_lesion, "healthy_cases": healthy, "lesion_families": families,
            "tuning_families": list(TUNING_FAMILIES), "test_families": list(TEST_FAMILIES), **extra}
