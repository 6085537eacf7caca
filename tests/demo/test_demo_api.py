"""nnugen_demo's request and sizes (the parts themselves run in tests/e2e and tests/anomaly)."""

import pytest
from nnugen.entrypoints.demo import main

from nnugen.demo.demo_api import PARTS, DemoRequest, demo_size


def test_every_part_runs_by_default():
    assert DemoRequest().parts == PARTS == ("seg", "generation", "anomaly")


@pytest.mark.parametrize("parts", [(), ("seg", "segmentation")])
def test_unknown_or_no_parts_are_refused(parts):
    with pytest.raises(ValueError, match="choose from seg, generation, anomaly"):
        DemoRequest(parts=parts)


def test_quick_is_smaller_than_the_full_demo():
    quick, full = demo_size(DemoRequest(quick=True)), demo_size(DemoRequest())
    assert quick.epochs * quick.iterations < full.epochs * full.iterations
    assert len(demo_size(DemoRequest()).shape) == 2 and DemoRequest().configuration == "2d"
    three_d = DemoRequest(three_d=True)
    assert len(demo_size(three_d).shape) == 3 and three_d.configuration == "3d_fullres"


def test_cli_refuses_an_unknown_part(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--parts", "segmentation"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'segmentation'" in capsys.readouterr().err
