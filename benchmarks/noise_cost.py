"""The cost of one partial-noising field of each ``anomaly.noise`` kind: simplex (opensimplex, AnoDDPM's 6 octaves),
filtered (Gaussian-filtered white noise, 6 octaves) and gaussian (white).

    python benchmarks/noise_cost.py [--repeats 5] [--threads 1]

Each kind draws one (1, 1, 64, 64) and one (1, 1, 32, 32, 32) field from a seeded generator; after one warm-up draw
the kinds take turns ``--repeats`` times and the best and the median time are printed. opensimplex evaluates its
array functions voxel by voxel in Python unless numba is installed; the script says which.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import time

SHAPES = ((1, 1, 64, 64), (1, 1, 32, 32, 32))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args(argv)

    import torch

    from nnugen.anomaly import NOISES, partial_noise_like

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, numba installed: "
          f"{importlib.util.find_spec('numba') is not None}")
    times: dict[tuple[str, tuple[int, ...]], list[float]] = {}
    for repeat in range(args.repeats + 1):
        for shape in SHAPES:
            like = torch.zeros(shape)
            for noise in NOISES:
                begin = time.perf_counter()
                partial_noise_like(noise, like, torch.Generator().manual_seed(repeat))
                if repeat:  # the first round warms up
                    times.setdefault((noise, shape), []).append(time.perf_counter() - begin)
    print("| noise | field | median | best |")
    print("| --- | --- | --- | --- |")
    for (noise, shape), seconds in times.items():
        print(f"| {noise} | {'x'.join(map(str, shape[2:]))} | {statistics.median(seconds) * 1e3:.1f} ms | "
              f"{min(seconds) * 1e3:.1f} ms |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
