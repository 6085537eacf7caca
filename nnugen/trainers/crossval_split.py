"""nnU-Net's seeded 5-fold split (``splits_final.json``), read or computed without nnU-Net's trainer, and written
whole before any rank reads it.

nnU-Net's ``do_split`` writes the file with a plain ``save_json`` from whichever process finds it missing. Under
``torchrun`` every rank runs ``do_split`` at once, so one rank can read the file while another is half-way through
writing it (a ``JSONDecodeError`` that kills that rank and, through gloo, the others). ``write_missing_splits``
writes the same split atomically first: a rank then finds either no file or a whole one, and ranks that both write
replace it with identical content."""

from __future__ import annotations

from pathlib import Path

SPLITS_FILE = "splits_final.json"


def nnunet_splits(preprocessed_base: str | Path, data_folder: str | Path) -> list[dict]:
    """The splits nnU-Net's ``do_split`` uses: ``splits_final.json`` when it exists, else nnU-Net's own seeded
    5-fold split of all preprocessed cases (same function, same arguments)."""
    from batchgenerators.utilities.file_and_folder_operations import load_json
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    splits_file = Path(preprocessed_base) / SPLITS_FILE
    if splits_file.is_file():
        return load_json(str(splits_file))
    return generate_crossval_split(case_identifiers(data_folder), seed=12345, n_splits=5)


def case_identifiers(data_folder: str | Path) -> list[str]:
    """The preprocessed cases, sorted as nnU-Net's ``do_split`` sorts them."""
    from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

    return sorted(infer_dataset_class(str(data_folder)).get_identifiers(str(data_folder)))


def write_missing_splits(preprocessed_base: str | Path, data_folder: str | Path) -> bool:
    """Write nnU-Net's split to ``splits_final.json`` atomically when the file is missing; whether it was written."""
    from nnugen.atomic_files import atomic_write_json

    splits_file = Path(preprocessed_base) / SPLITS_FILE
    if splits_file.is_file():
        return False
    atomic_write_json(splits_file, nnunet_splits(preprocessed_base, data_folder))
    return True
