"""nnugen_demo's request and sizes (the parts themselves run in tests/e2e and tests/anomaly)."""

import pytest
from nnugen.entrypoints.demo import main

from nnugen.demo.demo_api import PARTS, DemoRequest, _dataset, demo_size


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


@pytest.mark.parametrize("three_d", [False, True])
def test_the_quick_generator_is_smaller(three_d):
    from nnugen.demo.generation_demo import generation_budget

    quick, full = generation_budget(True, three_d), generation_budget(False, three_d)
    assert quick.epochs * quick.iterations * quick.batch < full.epochs * full.iterations * full.batch
    assert quick.cases <= full.cases


def test_a_3d_generator_trains_fewer_narrower_patches_than_the_2d_one():
    # a 3D patch of the MNI crops cost ~1 s per sample and iteration at width 64 on 2 cores: the 2D budget (8 x 600)
    # took ~820 s per 100-iteration epoch there; 2 x 600 at width 32 took 855 s for the whole part
    from nnugen.demo.generation_demo import generation_budget

    flat, deep = generation_budget(False), generation_budget(False, three_d=True)
    assert deep.batch * deep.epochs * deep.iterations <= flat.batch * flat.epochs * flat.iterations / 4
    assert deep.widest < flat.widest


def test_real_runs_2d_slices_unless_3d_is_asked_and_every_kind_has_its_own_dataset():
    from nnugen.demo.anomaly_demo import _dataset as lesion_dataset
    from nnugen.demo.anomaly_demo import anomaly_demo_size

    real, real_3d = DemoRequest(real=True), DemoRequest(real=True, three_d=True)
    assert real.configuration == "2d" and real_3d.configuration == "3d_fullres"
    assert demo_size(DemoRequest(real=True, quick=True)).n_train < demo_size(real).n_train
    kinds = [DemoRequest(), DemoRequest(three_d=True), real, real_3d]
    assert [_dataset(k) for k in kinds] == [(991, "nnugenPhantom2D"), (990, "nnugenPhantom3D"),
                                            (994, "nnugenMNI152Slices"), (992, "nnugenMNI152")]
    # the anomaly part of --real is on MNI152 slices, its own dataset, with the settings of its benchmark
    mni = anomaly_demo_size(False, real=True)
    assert mni.real and mni.shape == () and "diffusion.model_output=v" in mni.settings
    ids = {lesion_dataset(anomaly_demo_size(False))[0], lesion_dataset(mni)[0]}
    assert ids.isdisjoint(_dataset(k)[0] for k in kinds) and len(ids) == 2
