"""deform_label_map: a seeded, smooth, label-preserving deformation that keeps the shape and the anatomy."""

import numpy as np
import pytest

from nnugen.demo.deformed_labels import deform_label_map, dice


def brain_like(shape: tuple[int, ...]) -> np.ndarray:
    """Background, a ring of label 1 (grey matter, a few voxels thick) around a disc / ball of label 2."""
    spatial = [n for n in shape if n > 1]
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in spatial], indexing="ij"))
    radius = np.sqrt((grid**2).sum(0))
    label = np.zeros(spatial, np.uint8)
    label[radius < 0.8] = 1
    label[radius < 0.6] = 2
    return label.reshape(shape)


SHAPES = {"2d": (64, 52), "2d slice 1 x Y x X": (1, 65, 52), "3d": (32, 36, 28)}


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_shape_labels_and_overlap(shape):
    label = brain_like(shape)
    for seed in range(5):
        deformed = deform_label_map(label, np.random.default_rng(seed))
        assert deformed.shape == label.shape and deformed.dtype == label.dtype
        assert set(np.unique(deformed).tolist()) == {0, 1, 2}
        assert not np.array_equal(deformed, label)
        # a deformation, not a new map: the inner structure overlaps well, the thin ring less but clearly; and the
        # thin ring's Dice drops noticeably below 1: the default is no near-identity
        assert dice(deformed, label, 2) > 0.7
        assert 0.4 < dice(deformed, label, 1) < 0.95


def test_only_input_values_are_written():
    label = np.random.default_rng(0).choice(np.array([0, 3, 7], np.int16), size=(40, 30))
    deformed = deform_label_map(label, np.random.default_rng(1), strength=2.0)
    assert set(np.unique(deformed).tolist()) <= {0, 3, 7}
    assert deformed.dtype == np.int16


def test_seeded_and_stronger_moves_more():
    label = brain_like((1, 65, 52))
    first = deform_label_map(label, np.random.default_rng(3))
    assert np.array_equal(first, deform_label_map(label, np.random.default_rng(3)))
    assert not np.array_equal(first, deform_label_map(label, np.random.default_rng(4)))
    weak = np.mean([dice(deform_label_map(label, np.random.default_rng(s), strength=0.3), label, 1) for s in range(6)])
    strong = np.mean([dice(deform_label_map(label, np.random.default_rng(s), strength=2.0), label, 1)
                      for s in range(6)])
    assert weak > strong + 0.1


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_zero_strength_is_the_identity(shape):
    label = brain_like(shape)
    assert np.array_equal(deform_label_map(label, np.random.default_rng(0), strength=0.0), label)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="integer"):
        deform_label_map(np.zeros((8, 8), np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match=">= 0"):
        deform_label_map(np.zeros((8, 8), np.uint8), np.random.default_rng(0), strength=-1)
