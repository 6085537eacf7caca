"""``torchrun --nproc_per_node N nnugen_predict ... --partition Z Y X``: each case's sliding-window tiles shared among
the N processes (``nnugen.diffusion.partitioned_window_average``), rank 0 holding the stitched logits and writing the
files one process would write.

``PartitionedPredictor`` is nnU-Net's ``nnUNetPredictor`` with one method replaced, ``predict_sliding_window_return_
logits`` (one fold, one preprocessed case): padding, windows, Gaussian and mirroring are nnU-Net's own; the windows
are cut among the ranks with ``volume_partition`` along the axes of the patch (a 2d configuration keeps every slice
of its in-plane slab on each rank). Everything around it, folds, the moments pass of the ensemble's uncertainty
(``moments_pass``), preprocessing and export, is unchanged: the moments pass is a copy of this predictor, so it is
partitioned too.

Why slabs and not round-robin tiles: both give the same result, since a tile's prediction depends on its tile only
(the diffusion segmenter seeds member k's noise ``case seed + k`` at every call, whatever the tile or the rank), but
slabs keep each rank's sums on its extent, so ranks other than 0 need memory for their slab, not for the case.

The weighted sums are float32 (nnU-Net's own buffer is float16), so ``--partition 1 1 1`` in one process is the
reference a partitioned run equals to float32 rounding; against a run without ``--partition`` the probabilities
differ by nnU-Net's float16 rounding.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window

from nnugen.inference.partitioned_sampling import RankPlace

EMPTY = (0,)
"""The spatial shape of what ranks other than 0 return for a case: nothing (rank 0 holds the logits)."""


@dataclass(frozen=True)
class PredictionPartition:
    grid: tuple[int, ...]
    """Pieces per axis of the patch."""
    place: RankPlace


def case_partition(grid: tuple[int, ...], spatial: tuple[int, ...], patch: tuple[int, ...], step_size: float):
    """The ``VolumePartition`` of one padded case (``spatial``, at least ``patch`` per axis) whose windows are
    nnU-Net's at ``step_size``. A 2d patch on a (slices, Y, X) case: windows (1, *patch), one per slice, the slice
    axis in one piece. ValueError when an axis has fewer windows than pieces."""
    from nnugen.diffusion.volume_partition import partition_volume

    steps = [list(s) for s in compute_steps_for_sliding_window(tuple(spatial[-len(patch):]), tuple(patch), step_size)]
    slices = len(spatial) - len(patch)
    windows = [len(s) for s in steps]
    if any(n > w for n, w in zip(grid, windows)):
        raise ValueError(f"--partition {' '.join(map(str, grid))}: this case has {' x '.join(map(str, windows))} "
                         f"sliding windows (preprocessed shape {tuple(spatial[slices:])}, patch {tuple(patch)}, "
                         f"-step_size {step_size}), fewer than the pieces along an axis; nothing of it was written. "
                         f"Cut each axis into at most its windows, or predict it with fewer processes")
    starts = [list(range(n)) for n in spatial[:slices]] + steps
    return partition_volume(spatial, (1,) * slices + tuple(patch), starts, (1,) * slices + tuple(grid))


class PartitionedPredictor(nnUNetPredictor):
    """An ``nnUNetPredictor`` whose sliding window runs on the ranks of ``partition.place``; on ranks other than 0
    ``predict_sliding_window_return_logits`` returns an empty (C, 0) tensor and the case is not exported there."""

    def __init__(self, partition: PredictionPartition, **settings):
        super().__init__(**settings)
        self.partition = partition

    @property
    def writes(self) -> bool:
        return self.partition.place.rank == 0

    @torch.inference_mode()
    def predict_sliding_window_return_logits(self, input_image: torch.Tensor) -> torch.Tensor:
        """nnU-Net's padded sliding window over this rank's windows; (C, *input) float32 on rank 0."""
        from acvl_utils.cropping_and_padding.padding import pad_nd_image
        from tqdm import tqdm

        from nnugen.diffusion.partitioned_window_average import partitioned_window_average
        from nnugen.models.sliding_windows import SIGMA_SCALE, VALUE_SCALING

        place, patch = self.partition.place, tuple(int(p) for p in self.configuration_manager.patch_size)
        self.network = self.network.to(self.device)
        self.network.eval()
        data, unpad = pad_nd_image(input_image, patch, "constant", {"value": 0}, True, None)
        partition = case_partition(self.partition.grid, tuple(data.shape[1:]), patch, self.tile_step_size)
        slices = len(partition.volume) - len(patch)
        weights = compute_gaussian(patch, SIGMA_SCALE, VALUE_SCALING, torch.float32, torch.device("cpu")) \
            if self.use_gaussian else torch.ones(patch)
        weights = weights.view((1,) * slices + patch)

        def predict(tile: torch.Tensor) -> torch.Tensor:  # (1, C, *window); a 2d network sees (1, C, *patch)
            flat = tile[:, :, 0] if slices else tile
            return self._internal_maybe_mirror_and_predict(flat.to(self.device)).view(1, -1, *tile.shape[2:])

        windows = len(partition.pieces[place.rank].windows)
        # nnU-Net's autocast: on CUDA only (slow or refused on other devices); the sums stay float32
        autocast = torch.autocast(self.device.type) if self.device.type == "cuda" else nullcontext()
        with autocast, tqdm(total=windows, disable=not (self.allow_tqdm and self.writes)) as bar:
            logits = partitioned_window_average(predict, data.to(place.device), partition, place.rank, weights,
                                                place.timeout, bar.update)
        if logits is None:
            return torch.empty((self.label_manager.num_segmentation_heads, *EMPTY))
        return logits[(slice(None), *unpad[1:])]
