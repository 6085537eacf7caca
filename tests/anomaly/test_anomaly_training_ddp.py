"""DDP training of the anomaly model goes through the forward of the module DDP wraps: the segmenter's
``TrainingLoss`` view. Two gloo ranks, each with half of a batch, wrapped as ``NnugenAnomalyTrainer.initialize`` wraps
them (NnugenTrainer's wrap of the segmenter first, then the trainer's wrap of the view): every rank ends with the
mean of the two single-process gradients, and the view's checkpoint keys are the segmenter's."""

from __future__ import annotations

import pickle

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nnugen.config import (
    AnomalySettings,
    ChannelIntensity,
    DiffusionSettings,
    GenerationSettings,
    IntensitySettings,
    SamplerSettings,
)
from nnugen.models.anomaly_segmenter import AnomalySegmenter
from nnugen.models.image_generator import ImageGenerator
from nnugen.networks import TimeConditionedUNet
from nnugen.trainers.ddp import wrap_ddp

WORLD = 2


def _segmenter() -> AnomalySegmenter:
    torch.manual_seed(0)
    denoiser = TimeConditionedUNet(1, 1, features_per_stage=(4, 8), kernel_sizes=((3, 3),) * 2,
                                   strides=((1, 1), (2, 2)), n_conv_per_stage=(1, 1), n_conv_per_stage_decoder=(1,))
    generator = ImageGenerator(denoiser, 1, 2, (8, 8), DiffusionSettings(timesteps=10), SamplerSettings(steps=2),
                               GenerationSettings(mode="image"), 0.99)
    return AnomalySegmenter(generator, AnomalySettings(strengths=(0.5,)),
                            IntensitySettings(channels=(ChannelIntensity(low=-2.0, high=3.0),)), 2)


def _half(rank: int) -> torch.Tensor:
    batch = torch.randn(2 * WORLD, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    return batch[2 * rank:2 * rank + 2]


def _gradients(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}


def _worker(rank: int, folder: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=WORLD)
    try:
        segmenter = _segmenter()
        network = wrap_ddp(segmenter, torch.device("cpu"), True)  # NnugenTrainer.initialize's wrap
        network = wrap_ddp(network.module.training_loss(), torch.device("cpu"), True)  # the anomaly trainer's
        network.train()
        torch.manual_seed(100 + rank)  # each rank draws its own diffusion noise
        network(_half(rank)).backward()
        with open(f"{folder}/rank_{rank}.pkl", "wb") as file:
            pickle.dump({"gradients": _gradients(segmenter), "keys": list(network.module.state_dict())}, file)
    finally:
        dist.destroy_process_group()


def test_ddp_reduces_the_gradients_of_the_training_view(tmp_path):
    mp.start_processes(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True, start_method="spawn")
    ranks = [pickle.loads((tmp_path / f"rank_{rank}.pkl").read_bytes()) for rank in range(WORLD)]
    single = []
    for rank in range(WORLD):  # one process, each rank's half and noise in turn
        segmenter = _segmenter()
        loss = segmenter.training_loss().train()
        torch.manual_seed(100 + rank)
        loss(_half(rank)).backward()
        single.append(_gradients(segmenter))
        assert ranks[rank]["keys"] == list(segmenter.state_dict())
    assert single[0].keys() == ranks[0]["gradients"].keys() == ranks[1]["gradients"].keys() and single[0]
    assert any(not torch.allclose(single[0][name], single[1][name]) for name in single[0])  # the halves differ
    for name in single[0]:
        mean = (single[0][name] + single[1][name]) / 2
        for result in ranks:
            torch.testing.assert_close(result["gradients"][name], mean, rtol=1e-4, atol=1e-6)
