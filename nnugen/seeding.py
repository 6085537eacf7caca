"""Seeds: one integer makes a run repeatable. ``nnugen_train --seed S`` passes it to nnU-Net's trainer process
(run_flags.py); per-case seeds are derived from (seed, case) so split or resumed runs give the same files."""

from __future__ import annotations

import hashlib
import random


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derived_seed(seed: int, *keys: object) -> int:
    """A seed in [0, 2**63) that depends only on the seed and the keys (e.g. a case name, or rank and worker)."""
    digest = hashlib.sha256(":".join(str(part) for part in (seed, *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


def case_seed(seed: int, case: str) -> int:
    """A seed for one case that depends only on (seed, case name): the same however runs are split or resumed."""
    return derived_seed(seed, case)
