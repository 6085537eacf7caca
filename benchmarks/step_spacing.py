"""Sampler step spacing (issue 16): how far each step grid puts the spread of a sample off, on data whose exact
denoiser is known.

    python benchmarks/step_spacing.py [--samples 20000] [--seed 0] [--scales 0.05 0.2 1.0] [--steps 5 10 20 50 1000]

Data x0 ~ N(0, diag(s^2)), one channel per scale s. Its exact denoiser is E[x0 | x_t] = sqrt(abar) s^2 /
(abar s^2 + 1 - abar) x_t, and the probability-flow ODE carries the Gaussian marginal exactly: started from
x_t0 = sqrt(abar_t0 s^2 + 1 - abar_t0) z, it ends at s z. So the reference is the exact ODE on the same noise z, and the
printed ratio std(sampled) / std(s z) is 1 for an exact solver, free of Monte Carlo error (both are the same linear
map of the same z). nnugen's DDIM (eta 0) and DPM-Solver++(2M) run each spacing of ``sampling_timesteps`` over the
schedules the planner uses (T = 1000; linear for ddpm / ldm, cosine for anomaly), from pure noise (strength 1) and,
for anomaly, from its partial starts (``anomaly.strengths``). ``--samples`` draws of z per scale, seed ``--seed``.

The default spacing is chosen by the worst |ratio - 1| over the scales on what the planner runs: dpm_solver++ with 20
steps on the linear schedule from noise (ddpm, ldm) and DDIM with 20 steps on the cosine schedule from the strengths
0.25, 0.5, 0.75 (anomaly). Segmentation samples all of its 5 training timesteps, the same grid under every spacing.
"""

from __future__ import annotations

import argparse
import platform

PLANNED = {"ddpm / ldm": [("linear", "dpm_solver++", 1.0)],
           "anomaly": [("cosine", "ddim", 0.25), ("cosine", "ddim", 0.5), ("cosine", "ddim", 0.75)]}
PLANNED_STEPS = 20
RUNS = [("linear", "ddim", 1.0), ("linear", "dpm_solver++", 1.0), ("cosine", "ddim", 1.0),
        ("cosine", "dpm_solver++", 1.0), ("cosine", "ddim", 0.25), ("cosine", "ddim", 0.5), ("cosine", "ddim", 0.75)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000, help="noise draws per scale")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.05, 0.2, 1.0], help="data standard deviations s")
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 50, 1000])
    parser.add_argument("--timesteps", type=int, default=1000, help="training timesteps T")
    args = parser.parse_args(argv)

    import torch

    from nnugen.config import SPACINGS
    from nnugen.diffusion import alphas_cumprod, make_betas, partial_start, sampling_timesteps
    from nnugen.samplers import get_sampler

    scales = torch.tensor(args.scales, dtype=torch.float64).view(1, -1, 1)
    z = torch.randn((args.samples, scales.shape[1], 1), generator=torch.Generator().manual_seed(args.seed),
                    dtype=torch.float64)
    exact_std = (scales * z).std(dim=0).flatten()

    def ratios(schedule: str, sampler: str, strength: float, steps: int, spacing: str) -> list[float]:
        abar = alphas_cumprod(make_betas(schedule, args.timesteps)).to(torch.float64)

        def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            a = abar[t].view(-1, 1, 1)
            return a.sqrt() * scales**2 / (a * scales**2 + 1 - a) * x_t

        start = partial_start(strength, args.timesteps)
        grid = sampling_timesteps(args.timesteps, min(steps, start + 1), start=start, spacing=spacing,
                                  alphas_cumprod=abar)
        x = (abar[start] * scales**2 + 1 - abar[start]).sqrt() * z
        out = get_sampler(sampler)(denoise, x, abar, grid)
        return (out.std(dim=0).flatten() / exact_std).tolist()

    table = {(run, steps, spacing): ratios(*run, steps, spacing)
             for run in RUNS for steps in args.steps for spacing in SPACINGS}

    print(f"# step spacing: std(sampled) / std(exact ODE), T = {args.timesteps}, {args.samples} draws per scale, "
          f"seed {args.seed}; {platform.processor() or platform.machine()}, torch {torch.__version__}\n")
    head = " | ".join(f"{spacing} s={s:g}" for spacing in SPACINGS for s in args.scales)
    print(f"| schedule | sampler | strength | steps | {head} |")
    print("|" + " --- |" * (4 + len(SPACINGS) * len(args.scales)))
    for run in RUNS:
        for steps in args.steps:
            cells = " | ".join(f"{r:.3f}" for spacing in SPACINGS for r in table[run, steps, spacing])
            print(f"| {run[0]} | {run[1]} | {run[2]:g} | {steps} | {cells} |")

    print(f"\nworst |ratio - 1| over the scales at {PLANNED_STEPS} steps, the planner's sampler per task:")
    for task, runs in PLANNED.items():
        worst = {spacing: max(abs(r - 1) for run in runs for r in table[run, PLANNED_STEPS, spacing])
                 for spacing in SPACINGS}
        cells = ", ".join(f"{spacing} {err:.3f}" for spacing, err in worst.items())
        print(f"- {task}: {cells} -> best {min(worst, key=worst.get)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
