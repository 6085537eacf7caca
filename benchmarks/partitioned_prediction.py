"""One case predicted by 1 and by N gloo processes (issue 19, part 2: ``nnugen_predict --partition``): wall time and
peak memory per rank, and the largest difference of the logits and uncertainty maps.

    nice -n 19 python benchmarks/partitioned_prediction.py --case 32 96 32 --patch 16 16 16 --processes 2

The model is an untrained ``DiffusionSegmenter`` (3-stage ``TimeConditionedUNet``, 8-32 features, seeded, 3 classes)
in nnU-Net's ``PartitionedPredictor`` (``manual_initialization``, as ``load_diffusion_predictor`` leaves it, one
fold, no mirroring), sampling an ensemble with its uncertainty maps in one sliding window (the moments pass,
``nnugen_predict --save-uncertainty``). Every process runs one thread; the one-process case is also timed with
nnU-Net's own sliding window (no ``--partition``) and, with ``--threaded``, with N threads. Processes are spawned
with torch.multiprocessing and joined by gloo, as ``nnugen_predict --partition`` joins torchrun's group.
``--tiles-only`` times the partitioned window average without nnU-Net's predictor around it (for a machine with only
nnunetv2 and acvl_utils importable); ``--cuda`` adds a one-process run on CUDA (its noise is another stream)."""

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


def _tiles(network, data, patch, grid, place):
    """The partitioned window average alone (what ``PartitionedPredictor`` runs per fold, without nnU-Net's predictor
    around it: for a machine without nnU-Net's whole install): (logits, maps) on rank 0, (None, None) elsewhere."""
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window

    from nnugen.diffusion.partitioned_window_average import partitioned_window_average
    from nnugen.diffusion.volume_partition import partition_volume
    from nnugen.inference.moments_pass import MomentsView, split_moments

    case = tuple(data.shape[1:])
    partition = partition_volume(case, patch, compute_steps_for_sliding_window(case, tuple(patch), 0.5), grid)
    weights = compute_gaussian(tuple(patch), 1.0 / 8, 10, torch.float32, torch.device("cpu"))
    network = network.to(place.device)
    with torch.inference_mode():
        stitched = partitioned_window_average(MomentsView(network), data.to(place.device), partition, place.rank,
                                              weights, place.timeout)
    return (None, None) if stitched is None else split_moments(stitched.cpu(), 1e-8)


def _run(rank: int, world: int, case, patch, grid, steps: int, members: int, mode: str, device: str) -> tuple:
    from nnugen.inference.partitioned_sampling import RankPlace

    network = _segmenter(len(patch), steps, members)
    place = RankPlace(rank, world, torch.device(device), timedelta(seconds=600), 1) if mode != "nnunet" else None
    data = torch.randn((1, *case), generator=torch.Generator().manual_seed(SEED))
    if mode == "tiles":  # imported before the clock starts
        import nnunetv2.inference.sliding_window_prediction  # noqa: F401

        import nnugen.diffusion.partitioned_window_average  # noqa: F401
        import nnugen.inference.moments_pass  # noqa: F401
    else:
        from nnugen.inference.moments_pass import moments_predictor

        predictor = _predictor(network, patch, place, grid)
        window = moments_predictor(predictor, network)
    if world > 1:
        dist.barrier()  # time the prediction, not the other ranks' start
    before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    with network.sampling(network.planned_sampler, seed=SEED):
        if mode == "tiles":
            logits, maps = _tiles(network, data, patch, grid, place)
        else:
            from nnugen.inference.ensemble_prediction import predict_case

            prediction = predict_case(predictor, network, data, "case", seed=SEED, members=members,
                                      with_uncertainty=True, moments_predictor=window)
            logits, maps = prediction.logits, prediction.maps
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    windows = None
    if mode != "nnunet":
        from nnunetv2.inference.sliding_window_prediction import compute_steps_for_sliding_window

        from nnugen.diffusion.volume_partition import partition_volume

        starts = compute_steps_for_sliding_window(tuple(case), tuple(patch), 0.5)
        windows = len(partition_volume(case, patch, starts, grid).pieces[rank].windows)
    return (logits, maps), {"rank": rank, "threads": torch.get_num_threads(), "device": device,
                            "wall_s": round(wall, 2), "peak_rss_mb": round(peak_mb, 1),
                            "peak_rss_growth_while_predicting_mb": round(peak_mb - before_mb, 1), "windows": windows}


def _worker(rank: int, world: int, folder: str, label: str, threads: int, case, patch, grid, steps, members,
            mode: str, device: str) -> None:
    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{folder}/store_{label}", rank=rank, world_size=world)
    try:
        (logits, maps), stats = _run(rank, world, case, patch, grid, steps, members, mode, device)
        torch.save({"logits": logits, "maps": maps, "stats": stats}, f"{folder}/{label}_rank{rank}.pt")
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
    parser.add_argument("--tiles-only", dest="tiles_only", action="store_true",
                        help="time the partitioned window average without nnU-Net's predictor around it (needs only "
                             "nnunetv2 and acvl_utils importable, not nnU-Net's whole install)")
    parser.add_argument("--cuda", action="store_true", help="also run the one-process case on CUDA")
    args = parser.parse_args()
    n = args.processes
    grid = args.grid or [1, n] + [1] * (len(args.case) - 2)
    ones = [1] * len(args.case)
    mode = "tiles" if args.tiles_only else "partition"
    runs = {  # label: (processes, threads each, grid, mode, device)
        "one_1x1": (1, 1, ones, mode, "cpu"), f"partitioned_{n}x1": (n, 1, grid, mode, "cpu")}
    if not args.tiles_only:
        runs["nnunet_1x1"] = (1, 1, ones, "nnunet", "cpu")
    if args.threaded:
        runs[f"one_1x{n}"] = (1, n, ones, mode, "cpu")
    if args.cuda:
        runs["one_cuda"] = (1, 1, ones, mode, "cuda")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for label, (world, threads, pieces, run_mode, device) in runs.items():
            mp.start_processes(_worker, args=(world, folder, label, threads, args.case, args.patch, pieces, args.steps,
                                              args.members, run_mode, device), nprocs=world, join=True,
                               start_method="spawn")
            results[label] = [torch.load(Path(folder) / f"{label}_rank{r}.pt", weights_only=True)
                              for r in range(world)]
    one, many = results["one_1x1"][0], results[f"partitioned_{n}x1"][0]
    report = {"case": args.case, "patch": args.patch, "grid": grid, "steps": args.steps, "members": args.members,
              "mode": mode, "runs": {label: [r["stats"] for r in ranks] for label, ranks in results.items()},
              "max_abs_difference_logits": float((one["logits"] - many["logits"]).abs().max()),
              "max_abs_difference_maps": float((one["maps"] - many["maps"]).abs().max())}
    if "nnunet_1x1" in results:
        report["probabilities_vs_nnunet_float16_buffer"] = _quantiles(
            (one["logits"].softmax(0) - results["nnunet_1x1"][0]["logits"].softmax(0)).abs())
    if "one_cuda" in results:
        # a CUDA generator draws another noise stream than a CPU one: this shows the run, not equality
        report["max_abs_difference_logits_cuda_vs_cpu_other_noise"] = float(
            (one["logits"] - results["one_cuda"][0]["logits"]).abs().max())
    print(json.dumps(report))


if __name__ == "__main__":
    main()
