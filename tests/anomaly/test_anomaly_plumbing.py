"""The plumbing checks with exact expectations: they test the machinery, not a trained model.

(a) the clean (lesion-free) image as counterfactual: the residual is exactly the inserted lesion difference, and the
    best threshold segments the lesions (Dice ~1; not exactly 1 because lesions in brighter tissue have a brighter
    smooth edge than the core of a lesion in darker tissue);
(b) the input as its own counterfactual: an all-zero map, whose pixel AUPRC is exactly the lesion prevalence;
(c) an oracle denoiser on Gaussian data: the healthy residual grows with the strength.
"""

import math

import numpy as np
import pytest
import torch

from nnugen.anomaly import (
    TEST_FAMILIES,
    TUNING_FAMILIES,
    best_dice_threshold,
    body_mask,
    counterfactual,
    dice_at_threshold,
    ensemble_map,
    insert_lesions,
    multi_strength_counterfactuals,
    pixel_auprc,
    postprocess,
    residual_map,
)
from nnugen.demo.phantom import PhantomSpec, make_phantom_case
from nnugen.diffusion import alphas_cumprod, make_betas

SPECS = {"3d": PhantomSpec(shape=(24, 32, 32), n_channels=2), "2d": PhantomSpec(shape=(48, 48), spacing=(1.0, 1.0))}


def _lesion_cases(spec: PhantomSpec, families: tuple[str, ...], seeds: range):
    """(clean, with lesions, lesion mask) per case; images (1, C, *spatial) tensors, masks (*spatial) numpy."""
    cases = []
    for seed in seeds:
        images, _ = make_phantom_case(spec, np.random.default_rng(seed))
        clean = np.stack(images)
        body = body_mask(clean[None])[0, 0]
        lesioned, mask = insert_lesions(clean, body, np.random.default_rng([seed, 1]), families[seed % len(families)])
        cases.append((torch.from_numpy(clean)[None], torch.from_numpy(lesioned)[None], mask))
    return cases


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_a_clean_counterfactual_segments_the_inserted_lesions(spec):
    tuning = _lesion_cases(spec, TUNING_FAMILIES, range(4))
    maps = [residual_map(lesioned, clean)[0, 0].numpy() for clean, lesioned, _ in tuning]
    labels = [mask for *_, mask in tuning]
    for (clean, lesioned, mask), anomaly_map in zip(tuning, maps):
        np.testing.assert_array_equal(anomaly_map, (lesioned - clean).abs().mean(1)[0].numpy())
        assert anomaly_map[mask > 0].min() > 0  # every lesion voxel differs from the clean image
    threshold, dice = best_dice_threshold(maps, labels)
    assert dice > 0.9
    assert pixel_auprc(maps, labels) > 0.95
    # the threshold chosen on the tuning families carries over to the unseen test families
    test = _lesion_cases(spec, TEST_FAMILIES, range(4, 8))
    test_maps = [residual_map(lesioned, clean)[0, 0].numpy() for clean, lesioned, _ in test]
    assert dice_at_threshold(test_maps, [mask for *_, mask in test], threshold) > 0.8


@pytest.mark.parametrize("spec", SPECS.values(), ids=SPECS.keys())
def test_b_the_input_as_its_own_counterfactual_scores_the_prevalence(spec):
    cases = _lesion_cases(spec, TEST_FAMILIES, range(3))
    maps = [postprocess(residual_map(lesioned, lesioned))[0, 0].numpy() for _, lesioned, _ in cases]
    labels = [mask for *_, mask in cases]
    assert all(not m.any() for m in maps)
    prevalence = sum(int(m.sum()) for m in labels) / sum(m.size for m in labels)
    assert pixel_auprc(maps, labels) == pytest.approx(prevalence, rel=1e-12)


MU, S = 0.5, 0.3


def gaussian_oracle(abar: torch.Tensor):
    """The exact MMSE denoiser E[x0 | x_t] of healthy data x0 ~ N(MU, S^2) per voxel."""

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = float(abar[int(t[0])])
        return MU + S**2 * math.sqrt(a) / (a * S**2 + 1 - a) * (x - math.sqrt(a) * MU)

    return denoise


@pytest.mark.parametrize("shape", [(4, 1, 32, 32), (2, 1, 12, 12, 12)], ids=["2d", "3d"])
@pytest.mark.parametrize("noise", ["gaussian", "simplex", "filtered"])
def test_c_the_healthy_residual_grows_with_strength(shape, noise):
    # cosine schedule: its noise level keeps rising between strengths 0.5 and 0.75 (the linear one is ~saturated)
    abar = alphas_cumprod(make_betas("cosine", 1000))
    healthy = MU + S * torch.randn(shape, generator=torch.Generator().manual_seed(100), dtype=torch.float64)
    strengths = (0.25, 0.5, 0.75)
    counterfactuals = multi_strength_counterfactuals(gaussian_oracle(abar), healthy, abar, strengths, 20, noise=noise,
                                                     generator=torch.Generator().manual_seed(0))
    residuals = [float(residual_map(healthy, cf).mean()) for cf in counterfactuals]
    assert residuals[0] < residuals[1] < residuals[2]
    # the ensemble over strengths lies between its members; every counterfactual is healthy-looking data
    ensemble = float(ensemble_map([residual_map(healthy, cf) for cf in counterfactuals]).mean())
    assert residuals[0] < ensemble < residuals[2]
    for cf in counterfactuals:
        assert float(cf.mean()) == pytest.approx(MU, abs=0.1) and float(cf.std()) == pytest.approx(S, abs=0.1)
    # DDIM inversion changes the healthy image far less than partial noising at the same strength
    inverted = counterfactual(gaussian_oracle(abar), healthy, abar, 0.5, 20, inversion=True)
    assert float(residual_map(healthy, inverted).mean()) < 0.25 * residuals[1]
