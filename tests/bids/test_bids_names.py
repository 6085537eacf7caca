"""BIDS names that become paths (``--labels PIPELINE:SUFFIX`` -> ``derivatives/PIPELINE``) are refused when they would
leave their folder (issue 15, "paths from names"); subject and session labels are kept to nnU-Net's identifier
characters by ``select_cases``."""

from __future__ import annotations

import pytest

from nnugen.bids.bids_cases import BidsConversionError, LabelSource


@pytest.mark.parametrize("text", ["..:seg-manual", ".:seg-manual", "a/b:seg", "labels:../seg", "labels:a\\b",
                                  "..\\x:seg"])
def test_label_sources_that_leave_derivatives_are_refused(text):
    with pytest.raises(BidsConversionError, match="expected PIPELINE:SUFFIX"):
        LabelSource.parse(text)


def test_a_plain_label_source_passes():
    assert LabelSource.parse("labels:seg-manual") == LabelSource("labels", "seg-manual")
