"""How an output folder lies relative to a folder a command reads: the one test behind every "would overwrite or mix
with what is read" refusal (nnugen_predict's -o against -i, the model and the previous stage; nnugen_sample's
output against the model and --labels-from). Paths are compared resolved, so a symbolic link counts as the folder it
points to. Torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import Literal


def overlap(output: Path, read: Path) -> Literal["same", "inside", "holds"] | None:
    """``same``: one folder; ``inside``: ``output`` lies inside ``read``; ``holds``: ``read`` lies inside
    ``output``; None: apart."""
    output, read = Path(output).resolve(), Path(read).resolve()
    if output == read:
        return "same"
    if read in output.parents:
        return "inside"
    if output in read.parents:
        return "holds"
    return None
