"""Which of a fold's training cases the anomaly model trains on: the healthy ones. Used twice with the same rules:
by ``NnugenAnomalyTrainer.do_split`` on nnU-Net's split, and by ``nnugen_train`` before nnU-Net's run starts (so a
dataset without a healthy case is refused before a training log or split file is written).

A case is healthy when it is listed in the healthy-cases file (``anomaly.healthy_cases_file``, else
``healthy_cases.txt`` in the raw dataset folder), or, without such a file, when its label has no foreground."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nnugen.anomaly import HEALTHY_CASES_FILE, healthy_cases_file, read_case_list
from nnugen.trainers.crossval_split import case_identifiers, nnunet_splits


def has_foreground(dataset, key: str) -> bool:
    """Whether a preprocessed case's label has foreground; ``dataset`` is an nnU-Net dataset (``load_case``)."""
    _, seg, _, properties = dataset.load_case(key)
    locations = properties.get("class_locations")
    if locations is not None:  # nnU-Net samples foreground locations of every case at preprocessing
        return any(len(found) > 0 for found in locations.values())
    return bool((np.asarray(seg[:]) > 0).any())


def healthy_training_cases(train_keys: list[str], listing: Path | None, foreground: Callable[[str], bool],
                           fold) -> tuple[list[str], str]:
    """(the healthy training cases, where that came from); ValueError saying what to do when there is none."""
    if listing is not None:
        listed = read_case_list(listing)
        healthy, source = [k for k in train_keys if k in listed], f"listed in {listing}"
    else:
        healthy, source = [k for k in train_keys if not foreground(k)], "labels without foreground"
    if not healthy:
        where = f"none of the cases in {listing} is" if listing else "no case without foreground is"
        raise ValueError(f"no healthy training case in fold {fold} ({where} among its {len(train_keys)} training "
                         f"cases): list them in {HEALTHY_CASES_FILE} (one case identifier per line) in the raw dataset "
                         "folder, or with nnugen_plan -d ID --set anomaly.anomaly.healthy_cases_file=PATH")
    return healthy, source


def fold_training_keys(preprocessed_base: Path, data_folder: Path, fold: str) -> list[str] | None:
    """The fold's training cases as nnU-Net's ``do_split`` will choose them, without writing ``splits_final.json``.
    None for a fold beyond the splits (nnU-Net then draws a random 80:20 split itself)."""
    if fold == "all":
        return case_identifiers(data_folder)
    splits = nnunet_splits(preprocessed_base, data_folder)
    return list(splits[int(fold)]["train"]) if int(fold) < len(splits) else None


def check_healthy_training_cases(dataset_name: str, data_identifier: str, fold: str, configured_file: str) -> None:
    """``nnugen_train --task anomaly``: refuse a fold without a healthy training case before anything is written.
    Quiet when the preprocessed data is not there yet (nnU-Net reports that itself)."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    preprocessed, raw = os.environ.get("nnUNet_preprocessed"), os.environ.get("nnUNet_raw")
    if not preprocessed:
        return
    base = Path(preprocessed) / dataset_name
    data_folder = base / data_identifier
    if not data_folder.is_dir():
        return
    listing = healthy_cases_file(configured_file, Path(raw) / dataset_name if raw else None)
    train_keys = fold_training_keys(base, data_folder, fold)
    if train_keys is None:
        return  # nnU-Net's random split for this fold: the trainer checks it
    dataset = infer_dataset_class(str(data_folder))(str(data_folder), train_keys)
    healthy_training_cases(train_keys, listing, lambda key: has_foreground(dataset, key), fold)
