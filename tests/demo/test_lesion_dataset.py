"""How write_lesion_dataset (nnugen/demo/lesion_dataset.py) assigns lesion families to its cases."""

from __future__ import annotations

from nnugen.anomaly.synthetic_lesions import TEST_FAMILIES, TUNING_FAMILIES
from nnugen.demo.lesion_dataset import _lesion_family


def test_healthy_cases_then_validation_and_test_cases_cycling_through_their_families():
    n_healthy, n_val, n_test = 2, 3, 3
    families = [_lesion_family(index, n_healthy, n_healthy + n_val) for index in range(n_healthy + n_val + n_test)]
    assert families == [None, None, "hyper_spheres", "hypo_ellipsoids", "hyper_spheres", "hyper_blobs", "hypo_blobs",
                        "hyper_blobs"]
    assert families[2:4] == list(TUNING_FAMILIES) and families[5:7] == list(TEST_FAMILIES)
