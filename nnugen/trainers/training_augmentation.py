"""Which of nnU-Net's training augmentations a run uses (``training.augmentation``), as changes to the two hooks
nnU-Net builds its training pipeline from (``configure_rotation_dummyDA_mirroring_and_inital_patch_size`` and
``get_training_transforms``); nnU-Net's own variants ``nnUNetTrainerNoDA`` and ``nnUNetTrainerNoMirroring`` change
the same two.

- ``nnunet``: nnU-Net's pipeline unchanged (rotation and scaling, noise, blur, brightness, contrast, simulated low
  resolution, gamma, mirroring along every spatial axis). What a segmenter wants: invariance to all of it.
- ``mirror``: mirroring only (along nnU-Net's mirror axes), no intensity or spatial transform.
- ``none``: patches as the preprocessed data have them. What a generator wants: it learns the distribution of its
  training data, so with nnU-Net's pipeline it learns the augmented one (rotated heads on a grey fill, noise, blur,
  upside-down anatomy). The planner plans it for the generative tasks (docs/generation.md).

Without spatial transforms the loader crops the final patch directly (no larger initial patch to rotate), and where
nothing is mirrored in training the predictor does not mirror either, as in nnU-Net's variants."""

from __future__ import annotations

from collections.abc import Callable

from batchgeneratorsv2.transforms.spatial.mirroring import MirrorTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms

SpatialSetup = tuple  # nnU-Net's (rotation_for_DA, do_dummy_2d_data_aug, initial_patch_size, mirror_axes)


def spatial_setup(augmentation: str, nnunet_setup: SpatialSetup, patch_size) -> SpatialSetup:
    """nnU-Net's spatial set-up for the chosen augmentation: the initial patch is the patch itself unless nnU-Net
    rotates and scales, and there are mirror axes only where the run mirrors."""
    if augmentation == "nnunet":
        return nnunet_setup
    rotation, dummy_2d, _, mirror_axes = nnunet_setup
    return rotation, dummy_2d, [int(s) for s in patch_size], mirror_axes if augmentation == "mirror" else None


def training_transforms(augmentation: str, nnunet_transforms: Callable[[], ComposeTransforms],
                        validation_transforms: Callable[[], ComposeTransforms], mirror_axes) -> ComposeTransforms:
    """The training pipeline: nnU-Net's, or its validation pipeline (label bookkeeping only: the -1 padding label
    removed, regions, deep supervision targets) preceded by mirroring where the run mirrors."""
    if augmentation == "nnunet":
        return nnunet_transforms()
    bookkeeping = validation_transforms()
    if augmentation == "mirror" and mirror_axes:
        return ComposeTransforms([MirrorTransform(allowed_axes=tuple(mirror_axes)), *bookkeeping.transforms])
    return bookkeeping
