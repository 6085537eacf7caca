"""Previews during training (nnugen/trainers/training_previews.py, nnugen/evaluation/previews.py): when they are due,
the strip of panels with shared grey levels where asked, the 3D GIF, and the image sent to W&B."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nnugen.evaluation.previews import write_panels
from nnugen.trainers.training_previews import WANDB_KEY, first_case, preview_due, preview_path, send_to_wandb


@pytest.mark.parametrize(("epoch", "every", "epochs", "due"), [
    (9, 10, 100, True), (8, 10, 100, False), (99, 10, 100, True), (1, 10, 2, True), (0, 10, 2, False),
    (0, 1, 5, True),
])
def test_previews_are_due_every_preview_every_epochs_and_after_the_last(epoch, every, epochs, due):
    assert preview_due(epoch, every, epochs) is due


def test_a_2d_strip_shares_grey_levels_where_ranges_say_so(tmp_path):
    import imageio.v3 as iio

    reference = np.zeros((4, 5), np.float32)
    reference[1, 1] = 2.0
    prediction = np.zeros((4, 5), np.float32)
    prediction[2, 2] = 1.0  # class 1 only: alone it would be stretched to white
    image = np.arange(20, dtype=np.float32).reshape(4, 5)
    (path,) = write_panels(np.stack([image, reference, prediction]), tmp_path / "previews" / "epoch_0000.png",
                           [None, (0.0, 2.0), (0.0, 2.0)])
    strip = iio.imread(path)
    assert strip.shape == (4, 15) and strip.dtype == np.uint8
    assert strip[0, 0] == 0 and strip[3, 4] == 255  # the image's own min .. max
    assert strip[1, 6] == 255 and strip[2, 12] == 127  # class 2 white, class 1 mid-grey in both label panels
    with pytest.raises(ValueError, match="2 ranges for 3 preview panels"):
        write_panels(np.stack([image, reference, prediction]), tmp_path / "x.png", [None, None])


def test_a_3d_strip_is_the_middle_slice_and_a_gif_through_the_slices(tmp_path):
    import imageio.v3 as iio

    volume = np.zeros((2, 3, 4, 4), np.float32)
    volume[:, 1] = 1.0  # the middle slice is bright, the others dark
    files = write_panels(volume, tmp_path / "epoch_0001.png", [(0.0, 1.0), (0.0, 1.0)])
    assert [f.name for f in files] == ["epoch_0001.png", "epoch_0001.gif"]
    assert (iio.imread(files[0]) == 255).all()
    frames = iio.imread(files[1], index=None)
    assert frames.shape[0] == 3


def test_the_preview_case_is_the_first_of_the_batch_and_the_full_resolution_target():
    batch = {"data": torch.arange(8.0).reshape(2, 1, 2, 2),
             "target": [torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 1, 1)]}  # deep supervision: a list
    case = first_case(batch)
    assert torch.equal(case["data"], batch["data"][:1]) and torch.equal(case["target"], torch.ones(1, 1, 2, 2))
    assert preview_path("/out/fold_0", 7).as_posix() == "/out/fold_0/previews/epoch_0007.png"


def test_previews_go_to_wandb_as_an_image_at_the_epochs_step(monkeypatch, tmp_path):
    """wandb is not installed here: a stand-in module and run record what nnU-Net's WandbLogger would send."""
    from nnunetv2.training.logging import nnunet_logger

    images, logged = [], []

    def image(path, caption=None):
        images.append((path, caption))
        return ("image", path)

    monkeypatch.setattr(nnunet_logger, "wandb", SimpleNamespace(Image=image))
    wandb_logger = nnunet_logger.WandbLogger.__new__(nnunet_logger.WandbLogger)
    wandb_logger.run = SimpleNamespace(log=lambda values, step: logged.append((values, step)))
    png, gif = tmp_path / "epoch_0004.png", tmp_path / "epoch_0004.gif"
    send_to_wandb([object(), wandb_logger], [png, gif], 4)
    assert images == [(str(png), "epoch 4")]
    assert logged == [({WANDB_KEY: ("image", str(png))}, 4)]
