"""``training.augmentation``: nnU-Net's training pipeline, mirroring only, or none, through NnugenTrainer's two
hooks (training_augmentation.py), on nnU-Net's own transforms."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nnugen.config import TrainingSettings
from nnugen.trainers.nnugen_trainer import NnugenTrainer

PATCH = [24, 20]


def _trainer(augmentation: str) -> NnugenTrainer:
    """A NnugenTrainer with only what the two hooks read (nnU-Net's hooks read the patch size and the log)."""
    trainer = NnugenTrainer.__new__(NnugenTrainer)
    trainer.settings = SimpleNamespace(training=TrainingSettings(augmentation=augmentation))
    trainer.configuration_manager = SimpleNamespace(patch_size=PATCH)
    trainer.print_to_log_file = lambda *args, **kwargs: None
    return trainer


def _pipeline(trainer: NnugenTrainer):
    setup = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    rotation, dummy_2d, initial_patch, mirror_axes = setup
    transforms = trainer.get_training_transforms(PATCH, rotation, None, mirror_axes, dummy_2d,
                                                 foreground_labels=[1])
    return transforms, initial_patch, mirror_axes


def _batch(seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn((1, *PATCH), generator=generator)
    label = (torch.rand((1, *PATCH), generator=generator) > 0.5).to(torch.int16)
    label[0, 0, 0] = -1  # nnU-Net's padding label, which every pipeline turns into background
    return {"image": image, "segmentation": label}


def _flip(tensor: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return tensor.flip(dims) if dims else tensor


def test_none_leaves_patches_as_preprocessed():
    transforms, initial_patch, mirror_axes = _pipeline(_trainer("none"))
    assert list(initial_patch) == PATCH and mirror_axes is None
    for seed in range(10):
        batch = _batch(seed)
        out = transforms(**{k: v.clone() for k, v in batch.items()})
        assert torch.equal(out["image"], batch["image"])
        expected = batch["segmentation"].clone()
        expected[expected == -1] = 0
        assert torch.equal(out["segmentation"], expected)


def test_none_and_mirror_turn_off_what_training_did_not_do_at_inference():
    trainer = _trainer("none")
    _pipeline(trainer)
    assert trainer.inference_allowed_mirroring_axes is None
    trainer = _trainer("mirror")
    _pipeline(trainer)
    assert tuple(trainer.inference_allowed_mirroring_axes) == (0, 1)


def test_mirror_only_flips_image_and_label_together():
    transforms, initial_patch, mirror_axes = _pipeline(_trainer("mirror"))
    assert list(initial_patch) == PATCH and tuple(mirror_axes) == (0, 1)
    batch = _batch(0)
    batch["segmentation"][batch["segmentation"] == -1] = 0
    flips = {(): 0, (1,): 0, (2,): 0, (1, 2): 0}
    for _ in range(80):
        out = transforms(**{k: v.clone() for k, v in batch.items()})
        found = [dims for dims in flips if torch.equal(out["image"], _flip(batch["image"], dims))]
        assert len(found) == 1, "mirroring only: the image is one of its flips, nothing else changes"
        assert torch.equal(out["segmentation"], _flip(batch["segmentation"], found[0]))
        flips[found[0]] += 1
    assert all(count > 0 for count in flips.values()), flips


def test_nnunet_keeps_nnunets_pipeline():
    transforms, initial_patch, mirror_axes = _pipeline(_trainer("nnunet"))
    assert tuple(mirror_axes) == (0, 1)
    assert all(a > b for a, b in zip(initial_patch, PATCH)), "nnU-Net crops larger patches to rotate and scale"
    names = {type(t).__name__ for t in transforms.transforms}
    assert {"SpatialTransform", "MirrorTransform"} <= names
    changed = 0
    for seed in range(20):
        np.random.seed(seed)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        image = torch.randn((1, *initial_patch), generator=generator)
        label = torch.zeros((1, *initial_patch), dtype=torch.int16)
        out = transforms(image=image, segmentation=label)
        assert list(out["image"].shape[1:]) == PATCH
        changed += not torch.equal(out["image"], image[:, 2:2 + PATCH[0], 2:2 + PATCH[1]])
    assert changed > 0


def test_unknown_augmentation_is_refused_at_the_door():
    with pytest.raises(ValueError, match="training.augmentation"):
        TrainingSettings(augmentation="heavy")
