"""nnU-Net's split written whole before any rank reads it: ``NnugenTrainer.do_split`` writes ``splits_final.json``
atomically, with the split nnU-Net's ``do_split`` would have written, so nnU-Net's own plain write (which a second
torchrun rank could read half-way, CI 2026-12-06: rank 0 died reading it) never runs; an existing split is kept."""

from __future__ import annotations

import json
from pathlib import Path

from nnunetv2.utilities.crossval_split import generate_crossval_split

from nnugen.trainers.crossval_split import SPLITS_FILE, write_missing_splits
from nnugen.trainers.nnugen_trainer import NnugenTrainer

CASES = [f"case_{i:03d}" for i in (7, 2, 11, 0, 5, 3, 9)]


def _preprocessed(tmp_path: Path) -> tuple[Path, Path]:
    base = tmp_path / "Dataset900_Split"
    data = base / "nnUNetPlans_2d"
    data.mkdir(parents=True)
    for case in CASES:
        for ending in (".b2nd", "_seg.b2nd", ".pkl"):
            (data / f"{case}{ending}").write_bytes(b"")
    return base, data


def _trainer(base: Path, data: Path, fold) -> NnugenTrainer:
    trainer = NnugenTrainer.__new__(NnugenTrainer)
    trainer.fold, trainer.dataset_class, trainer.folder_with_segs_from_previous_stage = fold, None, None
    trainer.preprocessed_dataset_folder_base, trainer.preprocessed_dataset_folder = str(base), str(data)
    trainer.print_to_log_file = lambda *args, **kwargs: None
    return trainer


def test_do_split_writes_nnunets_split_atomically_before_nnunet_reads_it(tmp_path, monkeypatch):
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as nnunet_trainer

    def plain_write(*args, **kwargs):
        raise AssertionError("nnU-Net's plain save_json ran: a second rank could read the split half-written")

    monkeypatch.setattr(nnunet_trainer, "save_json", plain_write)
    base, data = _preprocessed(tmp_path)
    train, val = _trainer(base, data, 1).do_split()

    expected = generate_crossval_split(sorted(CASES), seed=12345, n_splits=5)
    written = json.loads((base / SPLITS_FILE).read_text())
    assert written == expected
    assert (list(train), list(val)) == (expected[1]["train"], expected[1]["val"])
    assert sorted(train + val) == sorted(CASES) and not set(train) & set(val)
    assert not list(base.glob(f".{SPLITS_FILE}*")), "a temporary was left beside the split"


def test_an_existing_split_is_kept(tmp_path):
    base, data = _preprocessed(tmp_path)
    own = [{"train": CASES[:4], "val": CASES[4:]}]
    (base / SPLITS_FILE).write_text(json.dumps(own))
    assert write_missing_splits(base, data) is False
    train, val = _trainer(base, data, 0).do_split()
    assert (list(train), list(val)) == (CASES[:4], CASES[4:])
    assert json.loads((base / SPLITS_FILE).read_text()) == own


def test_fold_all_writes_no_split(tmp_path):
    base, data = _preprocessed(tmp_path)
    train, val = _trainer(base, data, "all").do_split()
    assert sorted(train) == sorted(CASES) and sorted(val) == sorted(CASES)
    assert not (base / SPLITS_FILE).exists()
