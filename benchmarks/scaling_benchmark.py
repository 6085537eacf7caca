"""How cost grows with the work on the CPU: prediction time against image size, sampling time against steps x seeds,
and peak memory of chunked autoencoder decoding against volume size.

1. Prediction. Both trained model folders are loaded once into nnU-Net's ``nnUNetPredictor`` (as in
   ``predict_time.py``). Phantom cubes of each size (``nnugen.demo.phantom``, at the model's spacing) are predicted
   with ``predict_single_npy_array``. A forward hook counts the sliding-window tiles each prediction runs.
2. Sampling. The diffusion model predicts one phantom of its patch size (one tile) at every steps x seeds setting,
   said with ``DiffusionSegmenter.sampling``. The sampler never runs more steps than the model's training
   timesteps. So if the largest step count is above them, the segmenter is rebuilt around the same trained
   denoiser with a schedule of that many timesteps. A step still costs one denoiser call, but the segmentations are
   then not meaningful. A line ``a + b * steps * seeds`` is fitted to the medians.
3. Decoding. An untrained ``Autoencoder`` (memory does not depend on the weights) decodes a seeded random latent
   of each volume size, whole and with ``decode_chunked`` at a fixed core tile size. Each decode runs in a fresh
   process under ``torch.inference_mode``. Just before the decode, the kernel's peak-RSS mark is reset to the
   current RSS (Linux: ``/proc/self/clear_refs``); the memory a decode adds is the mark after it (``VmHWM``) minus
   that RSS. ``ru_maxrss`` would not do: after ``fork`` + ``exec`` it still holds the parent's peak.

Parts 1 and 2 run in rounds. Every round visits every setting, in reversed order every other round, so load from
other jobs falls on all settings alike; times are medians over rounds. Each part updates its key in the ``--output``
JSON file, and the plot is drawn from all parts that file holds.

    python benchmarks/scaling_benchmark.py --baseline RESULTS/NnugenBaselineTrainer__nnugenPlans__3d_fullres \
        --diffusion RESULTS/NnugenDiffSegTrainer__nnugenPlans__3d_fullres --output scaling.json \
        --plot docs/scaling_cost.png [--parts prediction sampling decoding]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from nnugen.atomic_files import atomic_write_json, atomic_write_with

PARTS = ("prediction", "sampling", "decoding")
# The autoencoder of part 3: small, one downsampling by 2 (so the decoder's receptive margin is a few voxels).
AE_FEATURES = (8, 16)
AE_STRIDES = ((1, 1, 1), (2, 2, 2))
AE_LATENT_CHANNELS = 4


def phantom_image(size: int, spacing: list[float], seed: int) -> tuple[np.ndarray, dict]:
    """A single-channel phantom cube (1, size, size, size) and the properties ``predict_single_npy_array`` wants."""
    from nnugen.demo.phantom import PhantomSpec, make_phantom_case

    images, _ = make_phantom_case(PhantomSpec(shape=(size,) * 3, spacing=tuple(spacing)), np.random.default_rng(seed))
    return images[0][None], {"spacing": list(spacing)}


def timed_rounds(settings: list, run, rounds: int) -> dict:
    """Run ``run(setting)`` for every setting, round after round, reversing the order every other round.
    Returns {setting: [seconds per round]}."""
    times = {setting: [] for setting in settings}
    for round_index in range(rounds):
        for setting in settings if round_index % 2 == 0 else settings[::-1]:
            start = time.perf_counter()
            run(setting)
            times[setting].append(time.perf_counter() - start)
        print(f"round {round_index + 1}/{rounds} done", flush=True)
    return times


def measure_prediction(predictors: dict, sizes: list[int], rounds: int, seed: int) -> list[dict]:
    spacing = list(next(iter(predictors.values())).configuration_manager.spacing)
    cases = {size: phantom_image(size, spacing, seed) for size in sizes}
    tiles = {}

    def run(setting: tuple[str, int]) -> None:
        name, size = setting
        predictor = predictors[name]
        calls = []
        hook = predictor.network.register_forward_hook(lambda *_: calls.append(1))
        try:
            predictor.predict_single_npy_array(*cases[size])
        finally:
            hook.remove()
        tiles[setting] = len(calls)

    times = timed_rounds([(name, size) for size in sizes for name in predictors], run, rounds)
    return [{"model": name, "size": size, "voxels": size**3, "tiles": tiles[(name, size)],
             "seconds": statistics.median(t), "seconds_per_tile": statistics.median(t) / tiles[(name, size)],
             "rounds": t} for (name, size), t in times.items()]


def measure_sampling(predictor, steps: list[int], seeds: list[int], rounds: int, seed: int) -> dict:
    from nnugen.models.diffusion_segmenter import DiffusionSegmenter

    trained = predictor.network
    timesteps = max(trained.diffusion.timesteps, max(steps))
    segmenter = DiffusionSegmenter(trained.denoiser, trained.num_classes,
                                   replace(trained.diffusion, timesteps=timesteps), trained.planned_sampler).eval()
    predictor.network = segmenter
    case = phantom_image(max(predictor.configuration_manager.patch_size), list(predictor.configuration_manager.spacing),
                         seed)

    def run(setting: tuple[int, int]) -> None:
        with segmenter.sampling(replace(segmenter.planned_sampler, steps=setting[0], seeds=setting[1]), seed=seed):
            predictor.predict_single_npy_array(*case)

    try:
        times = timed_rounds([(s, k) for s in steps for k in seeds], run, rounds)
    finally:
        predictor.network = trained
    rows = [{"steps": s, "seeds": k, "work": s * k, "seconds": statistics.median(t), "rounds": t}
            for (s, k), t in times.items()]
    work = np.array([row["work"] for row in rows], dtype=float)
    seconds = np.array([row["seconds"] for row in rows])
    slope, intercept = np.polyfit(work, seconds, 1)
    fitted = intercept + slope * work
    r2 = 1 - ((seconds - fitted) ** 2).sum() / ((seconds - seconds.mean()) ** 2).sum()
    return {"case_size": case[0].shape[1:], "sampler": trained.planned_sampler.name,
            "trained_timesteps": trained.diffusion.timesteps, "timesteps": timesteps, "rows": rows,
            "fit": {"intercept_s": float(intercept), "seconds_per_step_and_seed": float(slope), "r2": float(r2),
                    "max_relative_residual": float(np.max(np.abs(seconds - fitted) / seconds))}}


def decode_once(volume: int, mode: str, core: int, threads: int, seed: int) -> dict:
    """One decode, meant to run alone in a fresh process; memory figures in MiB."""
    import torch

    from nnugen.networks.autoencoder import Autoencoder
    from nnugen.networks.chunked_decoding import decode_chunked

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    autoencoder = Autoencoder(1, AE_FEATURES, AE_STRIDES, AE_LATENT_CHANNELS).eval()
    latent = autoencoder.latent_shape((volume,) * 3)
    if any(n % core for n in latent):
        raise SystemExit(f"volume {volume} gives a latent of {latent}; pick volumes whose latent size is a "
                         f"multiple of --decode-core {core}")
    z = torch.randn(1, AE_LATENT_CHANNELS, *latent, generator=torch.Generator().manual_seed(seed))
    chunks = tuple(n // core for n in latent) if mode == "chunked" else 1
    with torch.inference_mode():  # warm-up: the first convolution maps library code and buffers (tens of MiB)
        autoencoder.decode(torch.zeros(1, AE_LATENT_CHANNELS, *(4,) * len(latent)))
    try:
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS (Linux >= 4.0)
    except OSError as error:
        raise SystemExit(f"cannot reset the peak RSS ({error}); the decoding part needs Linux >= 4.0") from None
    before = _memory_mib("VmRSS")
    start = time.perf_counter()
    with torch.inference_mode():
        out = decode_chunked(autoencoder, z, chunks)
    seconds = time.perf_counter() - start
    return {"volume": volume, "mode": mode, "chunks": chunks, "latent": latent,
            "latent_margin": autoencoder.latent_margin, "peak_mib": _memory_mib("VmHWM") - before,
            "output_mib": out.numel() * out.element_size() / 2**20, "rss_before_mib": before, "seconds": seconds}


def _memory_mib(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS: resident now, VmHWM: peak resident), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024  # kB
    raise SystemExit(f"/proc/self/status has no {field}; the decoding part needs Linux")


def measure_decoding(volumes: list[int], core: int, whole_max: int, threads: int, seed: int) -> list[dict]:
    rows = []
    for volume in volumes:
        for mode in ("whole", "chunked") if volume <= whole_max else ("chunked",):
            child = [sys.executable, __file__, "--decode-child", json.dumps([volume, mode, core, threads, seed])]
            result = subprocess.run(child, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise SystemExit(f"decoding {mode} {volume}^3 failed:\n{result.stderr.strip()}")
            rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
            print(f"decoded {mode} {volume}^3: peak +{rows[-1]['peak_mib']:.0f} MiB", flush=True)
    return rows


def print_tables(results: dict) -> None:
    if "prediction" in results:
        print("| model | image size | tiles | s / case | s / tile |\n| --- | --- | --- | --- | --- |")
        for row in results["prediction"]:
            print(f"| {row['model']} | {row['size']}^3 | {row['tiles']} | {row['seconds']:.2f} | "
                  f"{row['seconds_per_tile']:.2f} |")
    if "sampling" in results:
        fit = results["sampling"]["fit"]
        print("| steps | seeds | steps x seeds | s / case |\n| --- | --- | --- | --- |")
        for row in results["sampling"]["rows"]:
            print(f"| {row['steps']} | {row['seeds']} | {row['work']} | {row['seconds']:.2f} |")
        print(f"fit: {fit['intercept_s']:.2f} s + {fit['seconds_per_step_and_seed']:.3f} s x steps x seeds, "
              f"R^2 {fit['r2']:.4f}, largest residual {100 * fit['max_relative_residual']:.0f} %")
    if "decoding" in results:
        print("| volume | decoding | chunks per axis | peak MiB | output MiB | s |")
        print("| --- | --- | --- | --- | --- | --- |")
        for row in results["decoding"]:
            chunks = "1" if row["mode"] == "whole" else "x".join(str(c) for c in row["chunks"])
            print(f"| {row['volume']}^3 | {row['mode']} | {chunks} | {row['peak_mib']:.0f} | {row['output_mib']:.1f} | "
                  f"{row['seconds']:.1f} |")


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    parts = [part for part in PARTS if part in results]
    figure, axes = plt.subplots(1, len(parts), figsize=(5 * len(parts), 4), squeeze=False)
    for axis, part in zip(axes[0], parts):
        if part == "prediction":
            for model in dict.fromkeys(row["model"] for row in results[part]):
                rows = [row for row in results[part] if row["model"] == model]
                axis.plot([r["size"] for r in rows], [r["seconds"] for r in rows], "o-", label=model)
                for r in rows:
                    axis.annotate(f"{r['tiles']} tile{'s' if r['tiles'] > 1 else ''}", (r["size"], r["seconds"]),
                                  fontsize=7,
                                  textcoords="offset points", xytext=(4, -10))
            axis.set(xlabel="image size (voxels per axis, cube)", ylabel="s / case (log scale)", yscale="log",
                     title="Prediction time per case", xticks=sorted({r["size"] for r in results[part]}))
            axis.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            axis.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        elif part == "sampling":
            rows, fit = results[part]["rows"], results[part]["fit"]
            for seeds in sorted({r["seeds"] for r in rows}):
                chosen = [r for r in rows if r["seeds"] == seeds]
                axis.plot([r["work"] for r in chosen], [r["seconds"] for r in chosen], "o",
                          label=f"{seeds} seed{'s' if seeds > 1 else ''}")
            work = np.linspace(0, max(r["work"] for r in rows), 50)
            axis.plot(work, fit["intercept_s"] + fit["seconds_per_step_and_seed"] * work, "k--", lw=1,
                      label=f"fit, R^2 {fit['r2']:.3f}")
            axis.set(xlabel="steps x seeds", ylabel="s / case (one tile)", title="Sampling time")
        else:
            for mode in ("whole", "chunked"):
                rows = [row for row in results[part] if row["mode"] == mode]
                axis.plot([r["volume"] for r in rows], [r["peak_mib"] for r in rows], "o-", label=f"{mode} decoding")
            rows = [row for row in results[part] if row["mode"] == "chunked"]
            axis.plot([r["volume"] for r in rows], [r["output_mib"] for r in rows], ":", color="grey",
                      label="output tensor")
            axis.set(xlabel="volume (voxels per axis, cube)", ylabel="peak memory added (MiB)", ylim=(0, None),
                     title="Autoencoder decoding memory", xticks=sorted({r["volume"] for r in results[part]}))
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    figure.tight_layout()
    atomic_write_with(path, lambda temporary: figure.savefig(temporary, format="png", dpi=110), suffix=".png")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, help="model folder of NnugenBaselineTrainer (optional)")
    parser.add_argument("--diffusion", type=Path, help="model folder of NnugenDiffSegTrainer")
    parser.add_argument("--parts", nargs="*", choices=PARTS, default=list(PARTS),
                        help="parts to measure; none: only print the tables and redraw the plot from --output")
    parser.add_argument("--sizes", type=int, nargs="+", default=[48, 64, 96], help="image sizes (cubes) to predict")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the prediction part")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 4], help="ensemble sizes")
    parser.add_argument("--sampling-rounds", type=int, default=3)
    parser.add_argument("--volumes", type=int, nargs="+", default=[64, 96, 128, 160], help="decoded volume sizes")
    parser.add_argument("--decode-core", type=int, default=16, help="latent voxels per chunk and axis, halo excluded")
    parser.add_argument("--whole-max", type=int, default=10**6, help="largest volume to also decode whole")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: most stable on a loaded machine)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the phantoms, the sampling noise and the latents")
    parser.add_argument("--output", type=Path, required=True, help="JSON results, updated part by part")
    parser.add_argument("--plot", type=Path, default=None, help="write the figure (PNG) here")
    parser.add_argument("--decode-child", help=argparse.SUPPRESS)
    if "--decode-child" in sys.argv:  # the fresh process of one decode (part 3)
        print(json.dumps(decode_once(*json.loads(sys.argv[sys.argv.index("--decode-child") + 1]))))
        return
    args = parser.parse_args()
    if {"prediction", "sampling"} & set(args.parts) and args.diffusion is None:
        parser.error("the prediction and sampling parts need --diffusion MODEL_FOLDER")

    results = json.loads(args.output.read_text()) if args.output.exists() else {}
    results.setdefault("settings", {}).update(threads=args.threads, seed=args.seed)
    if {"prediction", "sampling"} & set(args.parts):
        import torch
        from predict_time import load  # the same loading as the prediction-time benchmark, next to this script

        from nnugen.models.diffusion_segmenter import DiffusionSegmenter
        from nnugen.run.ext_trainer_path import ensure_ext_trainer_path

        ensure_ext_trainer_path()
        torch.set_num_threads(args.threads)
        diffusion = load(args.diffusion)
        if not isinstance(diffusion.network, DiffusionSegmenter):
            parser.error(f"--diffusion {args.diffusion} is not a model folder of a diffusion segmentation trainer")
        sampler = diffusion.network.planned_sampler
        predictors = {f"diffusion ({sampler.steps} steps x {sampler.seeds} seed)": diffusion}
        if args.baseline is not None:
            predictors = {"nnU-Net baseline": load(args.baseline), **predictors}
    measures = {
        "prediction": lambda: measure_prediction(predictors, args.sizes, args.rounds, args.seed),
        "sampling": lambda: measure_sampling(diffusion, args.steps, args.seeds, args.sampling_rounds, args.seed),
        "decoding": lambda: measure_decoding(args.volumes, args.decode_core, args.whole_max, args.threads, args.seed),
    }
    for part in PARTS:
        if part in args.parts:
            load_before = os.getloadavg()[0]
            results[part] = measures[part]()
            results["settings"][f"{part}_load_average"] = [load_before, os.getloadavg()[0]]  # 1-minute, start / end
            atomic_write_json(args.output, results)
    print_tables(results)
    if args.plot is not None:
        plot(results, args.plot)


if __name__ == "__main__":
    main()
