"""One case predicted by 1 and by N gloo processes (issue 19, part 2: ``nnugen_predict --partition``): wall time and
peak memory per rank, and the largest difference of the logits and uncertainty maps.

    nice -n 19 python benchmarks/partitioned_prediction.py --case 32 96 32 --patch 16 16 16 --processes 2

The model is an untrained ``DiffusionSegmenter`` (3-stage ``TimeConditionedUNet``, 8-32 features, seeded, 3 classes)
in nnU-Net's ``PartitionedPredictor`` (``manual_initialization``, as ``load_diffusion_predictor`` leaves it, one
fold, no mirroring), sampling an ensemble with its uncertainty maps in one sliding window (the moments pass,
``nnugen_predict --save-uncertainty``). Every process runs one thread; the one-process case is also timed with
nnU-Net's own sliding window (no ``--partition``) and, with ``--threaded``, with N threads. Processes are spawned
with torch.multiprocessing and joined by gloo, as ``nnugen_predict --partition`` joins torchrun's group."""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SEED = 0
CLASSES = 3


def _segmenter(dims: int, steps: int, members: int):
    from nnugen.config import DiffusionSettings, SamplerSettings
    from nnugen.models.diffusion_segmenter import DiffusionSegmenter
    from nnugen.networks import TimeConditionedUNet

    torch.manual_seed(SEED)
    k, one, two = (3,) * dims, (1,) * dims, (2,) * dims
    denoiser = TimeConditionedUNet(1 + CLASSES, CLASSES, features_per_stage=(8, 16, 32), kernel_sizes=(k, k, k),
                                   strides=(one, two, two), n_conv_per_stage=(1, 1, 1), n_conv_per_stage_decoder=(1, 1))
    diffusion = DiffusionSettings(timesteps=100, model_output="x0", recycling=False, mse_weight=0.0)
    return DiffusionSegmenter(denoiser, CLASSES, diffusion, SamplerSettings(name="ddim", steps=steps,
                                                                             seeds=members)).eval()


def _predictor(network, patch, place, grid):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnugen.inference.partitioned_prediction import PartitionedPredictor, PredictionPartition

    name = f"{len(patch)}d"
    plans = PlansManager({"dataset_name": "Dataset001_X", "plans_name": "nnugenPlans",
                          "image_reader_writer": "SimpleITKIO", "configurations": {name: {
                              "patch_size": list(patch), "spacing": [1.0] * len(patch), "architecture": {}}}})
    settings = dict(tile_step_size=0.5, use_mirroring=False, perform_everything_on_device=False,
                    device=torch.device("cpu"), allow_tqdm=False)
    predictor = nnUNetPredictor(**settings) if place is None else \
        PartitionedPredictor(PredictionPartition(tuple(grid), place), **settings)
    labels = {"labels": {"background": 0, "a": 1, "b": 2}, "channel_names": {"0": "T2"}, "file_ending": ".nii.gz"}
    predictor.manual_initialization(network, plans, plans.get_configuration(name),
                                    [{k: v.clone() for k, v in network.state_dict().items()}], labels, "T", None)
    return predictor


def _run(rank: int, world: int, case, patch, grid, steps: int, members: int, partitioned: bool) -> tuple:
    from nnugen.inference.ensemble_prediction import predict_case
    from nnugen.inference.moments_pass import moments_predictor
    from nnugen.inference.partitioned_sampling import RankPlace

    network = _segmenter(len(patch), steps, members)
    place = RankPlace(rank, world, torch.device("cpu"), timedelta(seconds=600), 1) if partitioned else None
    predictor = _predictor(network, patch, place, grid)
    data = torch.randn((1, *case), generator=torch.Generator().manual_seed(SEED))
    if world > 1:
        dist.barrier()  # time the prediction, not the other ranks' start
    before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    with network.sampling(network.planned_sampler):
        prediction = predict_case(predictor, network, data, "case", seed=SEED, members=members,
                                  with_uncertainty=True, moments_predictor=moments_predictor(predictor, network))
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    windows = None
    if partitioned:
        from nnugen.inference.partitioned_prediction import case_partition

        windows = len(case_partition(tuple(grid), tuple(case), tuple(patch), 0.5).pieces[rank].windows)
    return prediction, {"rank": rank, "threads": torch.get_num_threads(), "wall_s": round(wall, 2),
                        "peak_rss_mb": round(peak_mb, 1),
                        "peak_rss_growth_while_predicting_mb": round(peak_mb - before_mb, 1), "windows": windows}


def _worker(rank: int, world: int, folder: str, label: str, threads: int, case, patch, grid, steps, members,
            partitioned: bool) -> None:
    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{folder}/store_{label}", rank=rank, world_size=world)
    try:
        prediction, stats = _run(rank, world, case, patch, grid, steps, members, partitioned)
        torch.save({"logits": prediction.logits, "maps": prediction.maps, "stats": stats},
                   f"{folder}/{label}_rank{rank}.pt")
    finally:
        if world > 1:
            dist.destroy_process_group()


def _quantiles(difference: torch.Tensor) -> dict[str, float]:
    """Median, 99th percentile and maximum of an absolute difference. nnU-Net's float16 buffer rounds the Gaussian
    weights near a patch's corners to its smallest value, so at the case's border its average is float16 noise."""
    flat = difference.flatten().double()
    return {"median": float(flat.median()), "q99": float(flat.quantile(0.99)), "max": float(flat.max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", type=int, nargs="+", default=[32, 96, 32], help="preprocessed case (spatial)")
    parser.add_argument("--patch", type=int, nargs="+", default=[16, 16, 16])
    parser.add_argument("--grid", type=int, nargs="+", default=None, help="pieces per axis (default: N along axis 1)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--threaded", action="store_true", help="also time one process with N threads")
    args = parser.parse_args()
    n = args.processes
    grid = args.grid or [1, n] + [1] * (len(args.case) - 2)
    ones = [1] * len(args.case)
    runs = {  # label: (processes, threads each, grid, partitioned)
        "nnunet_1x1": (1, 1, ones, False), "partition_1x1": (1, 1, ones, True), f"partition_{n}x1": (n, 1, grid, True)}
    if args.threaded:
        runs.update({f"nnunet_1x{n}": (1, n, ones, False), f"partition_1x{n}": (1, n, ones, True)})
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for label, (world, threads, pieces, partitioned) in runs.items():
            mp.start_processes(_worker, args=(world, folder, label, threads, args.case, args.patch, pieces, args.steps,
                                              args.members, partitioned), nprocs=world, join=True,
                               start_method="spawn")
            results[label] = [torch.load(Path(folder) / f"{label}_rank{r}.pt", weights_only=True)
                              for r in range(world)]
    one, many = results["partition_1x1"][0], results[f"partition_{n}x1"][0]
    nnunet = results["nnunet_1x1"][0]
    report = {"case": args.case, "patch": args.patch, "grid": grid, "steps": args.steps, "members": args.members,
              "runs": {label: [r["stats"] for r in ranks] for label, ranks in results.items()},
              "max_abs_difference_logits": float((one["logits"] - many["logits"]).abs().max()),
              "max_abs_difference_maps": float((one["maps"] - many["maps"]).abs().max()),
              "probabilities_vs_nnunet_float16_buffer": _quantiles(
                  (one["logits"].softmax(0) - nnunet["logits"].softmax(0)).abs())}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
