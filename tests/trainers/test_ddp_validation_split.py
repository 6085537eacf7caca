"""The anomaly trainer's final validation under DDP: each rank computes the maps of its share of the cases, rank 0
gathers them and chooses the threshold, every rank receives it. Two gloo ranks with a process-group timeout shorter
than computing every map on rank 0 (what the trainer did, and NCCL's ten-minute watchdog ended the waiting ranks)
but longer than one share finish, with the same maps and threshold as one process; so does the trainer's own
``perform_actual_validation`` (its map, threshold and file steps replaced by stand-ins): every rank's model gets the
threshold, every rank exports its share, rank 0 alone writes files."""

from __future__ import annotations

import pickle
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from nnugen.anomaly import ThresholdRecord
from nnugen.trainers.ddp import from_rank_zero, gather_on_rank_zero, rank_share

WORLD = 2
KEYS = [f"case_{i:03d}" for i in range(8)]
SECONDS_PER_CASE_ON_RANK_0 = 1.0  # rank 0's share: 4 s; all cases on rank 0 would take 8 s
TIMEOUT_SECONDS = 6.0


def _maps(keys: list[str], slow: bool) -> dict:
    """A stand-in for ``validation_maps``: per case a float map, a lesion mask and properties."""
    cases = {}
    for key in keys:
        if slow:
            time.sleep(SECONDS_PER_CASE_ON_RANK_0)
        values = np.random.default_rng(int(key[-3:])).random((8, 16, 16), dtype=np.float32)
        cases[key] = (values, values > 0.9, {"spacing": [1.0, 1.0, 1.0], "case": key})
    return cases


def _threshold(cases: dict) -> float:
    return float(np.quantile(np.concatenate([c[0].ravel() for c in cases.values()]), 0.95))


def _wait_for_all(folder: Path, rank: int) -> None:
    """Start the short-timeout process group together (spawning and importing torch take several seconds)."""
    (folder / f"ready_{rank}").touch()
    deadline = time.monotonic() + 300
    while not all((folder / f"ready_{r}").exists() for r in range(WORLD)):
        if time.monotonic() > deadline:
            raise TimeoutError("the other rank never started")
        time.sleep(0.05)


def _trainer_validation(rank: int, folder: str) -> dict:
    """NnugenAnomalyTrainer.perform_actual_validation with stand-ins for what it calls; returns what each did."""
    from nnugen.trainers.nnugen_anomaly_trainer import NnugenAnomalyTrainer

    calls: dict = {"threshold": [], "exported": [], "saved": [], "evaluated": [], "summarised": []}
    trainer = NnugenAnomalyTrainer.__new__(NnugenAnomalyTrainer)
    trainer.is_ddp, trainer.local_rank, trainer.current_epoch = True, rank, 3
    trainer.output_folder = f"{folder}/fold_0"  # nnU-Net's constructor creates it
    Path(trainer.output_folder).mkdir(exist_ok=True)
    trainer.do_split = lambda: (["train_case"], KEYS)
    trainer.validation_maps = lambda keys, widest=0: _maps(keys, slow=rank == 0)
    trainer.erosion_search = lambda: 0  # the erosion as planned (its choice: tests/e2e/test_anomaly_e2e.py)
    trainer.choose_threshold = lambda cases: ThresholdRecord(_threshold(cases), "fpr", 0.05, "model")
    trainer.segmenter = lambda: SimpleNamespace(set_threshold=calls["threshold"].append, set_erosion=lambda v: None)
    trainer.save_checkpoint = calls["saved"].append
    trainer.summary = lambda cases, record: calls["summarised"].append(list(cases)) or {
        "pixel_auprc": 0.5, "dice_at_threshold": 0.5, "image_auroc": 0.5}
    trainer.export_segmentations = lambda cases, threshold, validation, probabilities: calls["exported"].extend(cases)
    trainer.evaluate_segmentations = lambda validation, number: calls["evaluated"].append(number)
    trainer.print_to_log_file = lambda *args, **kwargs: None
    trainer.perform_actual_validation()
    return calls


def _worker(rank: int, folder: str) -> None:
    _wait_for_all(Path(folder), rank)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD,
                            timeout=timedelta(seconds=TIMEOUT_SECONDS))
    try:
        mine = rank_share(KEYS)
        cases = gather_on_rank_zero(_maps(mine, slow=rank == 0), KEYS)
        threshold = from_rank_zero(lambda: _threshold(cases))
        trainer = _trainer_validation(rank, folder)
        with open(f"{folder}/rank_{rank}.pkl", "wb") as file:
            pickle.dump({"share": mine, "cases": cases, "threshold": threshold, "trainer": trainer}, file)
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("validation_split")
    start = time.monotonic()
    mp.start_processes(_worker, args=(str(folder),), nprocs=WORLD, join=True, start_method="spawn")
    assert time.monotonic() - start > 2 * 4 * SECONDS_PER_CASE_ON_RANK_0  # rank 0's shares really were slow
    return folder, [pickle.loads((folder / f"rank_{rank}.pkl").read_bytes()) for rank in range(WORLD)]


def test_each_rank_maps_its_share_and_rank_0_chooses_for_all(ranks):
    _, (first, second) = ranks
    assert first["share"] == KEYS[0::2] and second["share"] == KEYS[1::2]
    assert second["cases"] is None
    single = gather_on_rank_zero(_maps(KEYS, slow=False), KEYS)  # one process: every case, no collective
    assert list(first["cases"]) == list(single) == KEYS
    for key in KEYS:
        (a_map, a_mask, a_properties), (b_map, b_mask, b_properties) = first["cases"][key], single[key]
        assert np.array_equal(a_map, b_map) and np.array_equal(a_mask, b_mask) and a_properties == b_properties
    assert first["threshold"] == second["threshold"] == _threshold(single)


def test_the_trainers_validation_splits_the_cases_and_gives_every_rank_the_threshold(ranks):
    folder, results = ranks
    first, second = (result["trainer"] for result in results)
    threshold = _threshold(_maps(KEYS, slow=False))
    assert first["threshold"] == second["threshold"] == [threshold]
    assert first["exported"] == KEYS[0::2] and second["exported"] == KEYS[1::2]
    assert first["summarised"] == [KEYS] and first["evaluated"] == [len(KEYS)]
    assert second["saved"] == second["summarised"] == second["evaluated"] == []
    assert [Path(name).name for name in first["saved"]] == ["checkpoint_final.pth"]
    assert ThresholdRecord.load(folder / "fold_0" / "threshold.json", "model").threshold == threshold
