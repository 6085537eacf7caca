"""The windowed denoiser tiles a volume as nnU-Net's predictor does: nnU-Net's window starts and Gaussian map, and the
same weighted average as ``nnUNetPredictor.predict_sliding_window_return_logits`` with the denoiser as its network."""

import itertools
from types import SimpleNamespace

import pytest
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window
from torch import nn

from nnugen.diffusion.windowed_denoiser import windowed_denoiser
from nnugen.models.sliding_windows import nnunet_windows

CASES = {"2d": ((1, 2, 37, 20), (16, 16)), "3d": ((1, 2, 12, 20, 9), (8, 8, 8))}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_windows_and_weights_are_nnunets(case):
    shape, patch = case
    starts, weights = nnunet_windows(shape[2:], patch)
    assert starts == compute_steps_for_sliding_window(shape[2:], patch, 0.5)
    reference = compute_gaussian(tuple(patch), 1 / 8, 10, torch.float32, torch.device("cpu"))
    torch.testing.assert_close(weights, reference, rtol=0, atol=0)
    corners: list[tuple[int, ...]] = []

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        corners.append(tuple(int(v) for v in x_t[0, 0].flatten()[:1].round()))  # the window's first voxel
        return x_t

    index = torch.arange(torch.Size(shape[2:]).numel(), dtype=torch.float64).view(1, 1, *shape[2:])
    x = index.expand(shape).contiguous()
    result = windowed_denoiser(denoise, patch, nnunet_windows)(x, torch.zeros(1))
    torch.testing.assert_close(result, x, rtol=0, atol=1e-9)  # identical estimates average back to themselves
    flat = [sum(c * s for c, s in zip(corner, torch.tensor(shape[2:]).flip(0).cumprod(0).flip(0)[1:].tolist() + [1]))
            for corner in itertools.product(*starts)]
    assert [c[0] for c in corners] == flat


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_same_average_as_nnunets_sliding_window_predictor(case):
    shape, patch = case
    conv = nn.Conv2d if len(patch) == 2 else nn.Conv3d
    torch.manual_seed(0)
    network = conv(2, 2, 3, padding=1).eval()  # a denoiser keeps its channels
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = windowed_denoiser(lambda x_t, t: network(x_t), patch, nnunet_windows)(x, torch.zeros(1))
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                perform_everything_on_device=False, device=torch.device("cpu"), verbose=False,
                                allow_tqdm=False)
    predictor.network = network
    predictor.configuration_manager = SimpleNamespace(patch_size=list(patch))
    predictor.label_manager = SimpleNamespace(num_segmentation_heads=2)
    # nnU-Net's 2D configurations see a case as (C, 1, y, x) and tile the last two axes
    image = x[0] if len(patch) == 3 else x[0][:, None]
    theirs = predictor.predict_sliding_window_return_logits(image).float()
    theirs = theirs if len(patch) == 3 else theirs[:, 0]
    # nnU-Net accumulates in float16, where its border weights (down to 1e-6) underflow: agreement to float16's
    # precision wherever the summed weight is representable there (away from the borders)
    starts, weights = nnunet_windows(shape[2:], patch)
    norm = torch.zeros(shape[2:])
    for corner in itertools.product(*starts):
        norm[tuple(slice(c, c + p) for c, p in zip(corner, patch))] += weights
    kept = norm > 0.01
    assert kept.float().mean() > 0.6  # 2D 0.86, 3D 0.65 of the voxels
    torch.testing.assert_close(ours[0][:, kept], theirs[:, kept], rtol=2e-3, atol=2e-3)


def test_a_patch_sized_sample_is_denoised_in_one_call_and_a_thin_axis_gets_one_window():
    calls: list[tuple[int, ...]] = []

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(x_t.shape[2:]))
        return x_t

    windowed = windowed_denoiser(denoise, (8, 8), nnunet_windows)
    windowed(torch.zeros(1, 1, 8, 8), torch.zeros(1))
    assert calls == [(8, 8)]
    calls.clear()
    windowed(torch.zeros(1, 1, 5, 12), torch.zeros(1))
    assert calls == [(5, 8), (5, 8)]  # 5 < 8: one window of 5; 12: nnU-Net's starts [0, 4]
    with pytest.raises(ValueError, match="3D sample for a 2D patch"):
        windowed(torch.zeros(1, 1, 8, 8, 8), torch.zeros(1))
