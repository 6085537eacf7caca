"""``nnugen_train ... -pretrained_weights`` at the door (issue 16, part 1): the checks that need no trained model, in
this process (the CLI's one-line error for a checkpoint whose layers do not match: tests/e2e/test_warm_start_e2e.py)."""

from __future__ import annotations

import pytest

from nnugen.run.train_api import TrainRequest, check_pretrained_weights


def _check(tmp_path, **fields) -> None:
    checkpoint = tmp_path / "checkpoint_final.pth"
    checkpoint.write_bytes(b"")
    request = TrainRequest(dataset="901", fold="1", configuration="3d", device="cpu",
                           **{"pretrained_weights": str(checkpoint), **fields})
    check_pretrained_weights(request, "NnugenDiffSegTrainer", plans={}, configuration="3d_fullres")


@pytest.mark.parametrize("fields, message", [
    ({"task": "ddpm"}, "-pretrained_weights works with --task seg and baseline (nnU-Net's network or its exact "
                       "extension), not --task ddpm"),
    ({"task": "anomaly"}, "works with --task seg and baseline"),
    ({"continue_training": True}, "-pretrained_weights starts a new training; drop it with --c or --val"),
    ({"only_validation": True}, "drop it with --c or --val"),
])
def test_a_start_the_weights_cannot_serve_is_refused(tmp_path, fields, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _check(tmp_path, **fields)


def test_a_missing_checkpoint_is_named_with_what_to_give(tmp_path):
    missing = tmp_path / "missing.pth"
    with pytest.raises(ValueError) as error:
        _check(tmp_path, task="seg", pretrained_weights=str(missing))
    assert str(error.value).startswith(f"-pretrained_weights {missing}: no such file; give a trained nnU-Net's")
