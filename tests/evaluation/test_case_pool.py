"""Per-case evaluation work goes to spawned processes only when the cases are big enough to repay starting them
(nnugen/evaluation/case_pool.py)."""

from __future__ import annotations

import pytest

from nnugen.evaluation import case_pool
from nnugen.evaluation.case_pool import POOL_MIN_BYTES, files_bytes, map_cases


class _RecordingContext:
    """Stands in for multiprocessing's spawn context: records the pool size and maps in this process."""

    def __init__(self) -> None:
        self.pools: list[int] = []
        self.methods: list[str] = []

    def __call__(self, method: str):
        self.methods.append(method)
        return self

    def Pool(self, processes: int):  # noqa: N802 (multiprocessing's name)
        self.pools.append(processes)
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def map(self, function, jobs):
        return [function(job) for job in jobs]


@pytest.fixture
def spawn(monkeypatch) -> _RecordingContext:
    context = _RecordingContext()
    monkeypatch.setattr(case_pool.multiprocessing, "get_context", context)
    return context


def _files(folder, sizes: list[int]) -> list[str]:
    paths = []
    for k, size in enumerate(sizes):
        path = folder / f"case_{k}.nii.gz"
        with open(path, "wb") as stream:
            stream.truncate(size)
        paths.append(str(path))
    return paths


def test_small_cases_stay_in_this_process(tmp_path, spawn):
    files = _files(tmp_path, [1000, 2000, 3000])
    assert files_bytes(files) == 6000 and files_bytes([*files, str(tmp_path / "missing")]) == 6000
    assert map_cases(abs, [-1, 2, -3], 4, files) == [1, 2, 3]
    assert spawn.pools == []


def test_big_cases_go_to_a_spawned_pool_no_larger_than_the_jobs(tmp_path, spawn):
    files = _files(tmp_path, [POOL_MIN_BYTES // 2, POOL_MIN_BYTES // 2])
    assert map_cases(abs, [-1, 2], 4, files) == [1, 2]
    assert spawn.methods == ["spawn"] and spawn.pools == [2]


@pytest.mark.parametrize("processes, jobs", [(1, [-1, -2]), (4, [-5])])
def test_one_process_or_one_job_never_starts_a_pool(tmp_path, spawn, processes, jobs):
    files = _files(tmp_path, [POOL_MIN_BYTES])
    assert map_cases(abs, jobs, processes, files) == [abs(j) for j in jobs]
    assert spawn.pools == []
