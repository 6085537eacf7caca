"""The progress bar of ``nnugen_train --progress``: one bar per epoch over its training steps, cleared when closed."""

from __future__ import annotations


def epoch_progress_bar(total: int, epoch: int):
    """A tqdm bar over the ``total`` training steps of ``epoch``; call ``update()`` per step and ``close()`` at the end.
    tqdm is imported here, only when the bar is asked for."""
    from tqdm import tqdm

    return tqdm(total=total, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True)
