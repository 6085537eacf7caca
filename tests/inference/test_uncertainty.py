"""Entropy and variance of an ensemble of sampled segmentations: known values, 2D and 3D alike."""

from __future__ import annotations

import math

import pytest
import torch

from nnugen.inference.uncertainty import (
    MAP_NAMES,
    add_member,
    class_mean_variance,
    member_variance,
    predictive_entropy,
    uncertainty_maps,
)

SPATIAL = {"2d": (5, 6), "3d": (3, 4, 5)}


def random_probabilities(members: int, classes: int, spatial: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((members, classes, *spatial), generator=generator).softmax(dim=1)


@pytest.mark.parametrize("dim", SPATIAL)
@pytest.mark.parametrize("classes", [2, 3, 5])
def test_uniform_probabilities_have_entropy_log_c(dim, classes):
    uniform = torch.full((classes, *SPATIAL[dim]), 1.0 / classes)
    entropy = predictive_entropy(uniform)
    assert entropy.shape == SPATIAL[dim]
    torch.testing.assert_close(entropy, torch.full(SPATIAL[dim], math.log(classes)))


@pytest.mark.parametrize("dim", SPATIAL)
def test_one_hot_probabilities_have_entropy_zero(dim):
    one_hot = torch.zeros((3, *SPATIAL[dim]))
    one_hot[1] = 1.0
    entropy = predictive_entropy(one_hot)
    assert torch.equal(entropy, torch.zeros(SPATIAL[dim]))  # 0 log 0 is 0, not NaN


def test_entropy_of_a_known_distribution_in_nats():
    p = torch.tensor([0.5, 0.25, 0.25]).reshape(3, 1, 1)
    expected = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert predictive_entropy(p).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("dim", SPATIAL)
@pytest.mark.parametrize("members", [1, 2, 3, 7])
def test_identical_members_have_variance_exactly_zero(dim, members):
    one = random_probabilities(1, 3, SPATIAL[dim])[0]
    variance = member_variance(one.expand(members, *one.shape))
    assert variance.shape == SPATIAL[dim]
    assert torch.equal(variance, torch.zeros(SPATIAL[dim]))


@pytest.mark.parametrize("dim", SPATIAL)
def test_variance_is_the_population_variance_averaged_over_classes(dim):
    members = random_probabilities(6, 4, SPATIAL[dim], seed=1)
    expected = members.var(dim=0, unbiased=False).mean(dim=0)
    torch.testing.assert_close(member_variance(members), expected, rtol=1e-5, atol=1e-7)


def test_two_opposite_one_hot_members_have_the_largest_variance():
    # p_c is 0 for one member and 1 for the other in both classes: variance 1/4 per class
    members = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(2, 2, 1, 1)
    assert member_variance(members).item() == pytest.approx(0.25)
    assert predictive_entropy(members.mean(dim=0)).item() == pytest.approx(math.log(2))


def test_running_moments_match_the_stacked_members():
    members = random_probabilities(5, 3, (4, 4), seed=2)
    moments = None
    for member in members:
        moments = add_member(moments, member)
    assert moments.count == 5
    torch.testing.assert_close(moments.mean, members.mean(dim=0))
    torch.testing.assert_close(class_mean_variance(moments), member_variance(members))


def test_uncertainty_maps_stack_entropy_then_variance():
    members = random_probabilities(3, 3, (2, 3, 4), seed=3)
    moments = None
    for member in members:
        moments = add_member(moments, member)
    maps = uncertainty_maps(moments)
    assert MAP_NAMES == ("entropy", "variance")
    assert maps.shape == (2, 2, 3, 4) and maps.dtype == torch.float32
    torch.testing.assert_close(maps[0], predictive_entropy(members.mean(dim=0)))
    torch.testing.assert_close(maps[1], member_variance(members))
    assert (maps[0] >= 0).all() and (maps[0] <= math.log(3) + 1e-6).all()
    assert (maps[1] >= 0).all() and (maps[1] <= 0.25).all()


def test_no_members_is_an_error():
    with pytest.raises(ValueError, match="at least one member"):
        member_variance(torch.zeros((0, 3, 2, 2)))
