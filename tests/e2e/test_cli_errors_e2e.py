"""A broken checkpoint that ``nnugen_train --c`` would load gets one line on stderr (no import warnings of nnU-Net's
dependencies around it) and exit code 1, and nothing is written: it is refused before nnU-Net's run starts its
training log."""

from __future__ import annotations

import subprocess

import pytest
from e2e_helpers import cli, nnunet_environment, run

pytestmark = pytest.mark.slow

GARBAGE = b"not a checkpoint, cut off by a full disk"


def test_continue_from_a_corrupt_checkpoint_is_one_line(tiny2d, fresh_results):
    root = fresh_results(tiny2d)
    env = nnunet_environment(root)
    run([cli("nnugen_plan"), "-d", "902", "-c", "2d"], env)
    fold = root / "results" / "Dataset902_Tiny2D" / "NnugenDiffSegTrainer__nnugenPlans__2d" / "fold_0"
    fold.mkdir(parents=True)
    (fold / "checkpoint_latest.pth").write_bytes(GARBAGE)
    result = subprocess.run([cli("nnugen_train"), "902", "0", "2d", "-device", "cpu", "--c"], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nnugen_train: error: ") and "checkpoint_latest.pth does not load" in lines[0], lines
    assert [path.name for path in fold.iterdir()] == ["checkpoint_latest.pth"], "refused, yet files were written"
    assert (fold / "checkpoint_latest.pth").read_bytes() == GARBAGE
