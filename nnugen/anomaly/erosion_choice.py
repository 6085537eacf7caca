"""How far to erode the anomaly map's region, chosen on validation cases with the threshold (``anomaly.erode_search``).

Counterfactuals rebuild the body's edge worst, so the residual maps light up along it (Baur et al. 2021; Behrendt et
al. 2023 erode the brain mask by a fixed width). The width that helps depends on the data: too little leaves the rim,
too much masks lesions near the edge. ``choose_erosion`` takes each validation case's map at every width 0..N (from
one set of counterfactuals, eroded per sliding-window tile exactly as prediction erodes), gives each width its own
best-Dice threshold, and keeps the width with the highest pooled Dice (the smaller on a tie), so the user's own
validation lesions decide, as they decide the threshold."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nnugen.anomaly.threshold import best_dice_threshold


def choose_erosion(maps_by_erosion: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> tuple[int, list[float]]:
    """(the erosion whose best threshold gives the highest pooled validation Dice, that Dice for every erosion).

    ``maps_by_erosion``: per case (N + 1, *spatial), channel k the map with its region eroded by k voxels; ``labels``:
    per case the lesion mask (*spatial). ValueError when no case has a lesion (no Dice to choose by) or the cases
    disagree on N."""
    if not any(np.asarray(label).any() for label in labels):
        raise ValueError("choosing the erosion needs validation cases with lesions (the best_dice rule)")
    widths = {len(maps) for maps in maps_by_erosion}
    if len(widths) != 1:
        raise ValueError(f"every case needs its map at the same erosions, got {sorted(widths)} channels")
    dices = [float(best_dice_threshold([maps[k] for maps in maps_by_erosion], labels)[1]) for k in range(widths.pop())]
    return int(np.argmax(dices)), dices  # argmax: the first, i.e. the smallest erosion, on a tie
