"""Pseudo-healthy counterfactuals: partially noise an image, then denoise it with a model trained on healthy data only.

The diffusion model, trained on healthy scans, cannot reproduce a lesion it never saw, so denoising a partially
noised scan gives back a "healthy version" of it; the residual to the input marks the anomaly.

- Partial noising at a strength (SDEdit, Meng et al. 2022; pDDPM / cDDPM, Behrendt et al. 2023; THOR, Bercea et al.
  2024): x_t0 = q_sample(image, t0) with t0 = partial_start(strength, T), then deterministic DDIM (Song et al. 2021,
  eta = 0) from t0 down to 0. strength 1 is pure noise (no information from the input survives).
- Simplex noise instead of Gaussian noise for that one draw (AnoDDPM, Wyatt et al. 2022): see partial_noise.py.
- DDIM inversion (Song et al. 2021 sec. 4.3): encode the image deterministically up to t0 with ddim_invert, decode
  with ddim; no random noise at all, so the counterfactual stays closer to the input (less healthy tissue changes,
  but also less of the lesion removed). ``inversion_iterations`` N > 0 refines each inversion step by fixed-point
  iteration towards the exact inverse of the decoding step (Pan et al. 2023; samplers/ddim_inversion.py). Where it
  converges, decoding returns the input itself, for any model, lesion included (the discrete DDIM map is then
  inverted exactly): the residual left is what did not converge. The plain inversion's map is thus largely its own
  round-trip error; the exact one measures how much of it that is, and encodes for editing.

Several strengths and seeds are denoised together (``seeded_counterfactuals``, ``max_batch``): their members are stacked
on the batch axis and run one sampler loop, one denoiser call per step, each strength on its own DDIM grid
(per-sample t). A member gets the same noise and the same updates as when it runs alone.

Symbols: image = x_0 (B, C, *spatial) in the model's intensity range; alphas_cumprod = abar (T,); t0 the training
index partial noising starts at; ``denoise(x_t, t) -> x0_hat`` the samplers' contract (see nnugen.diffusion.Denoiser).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from nnugen.anomaly.partial_noise import NOISES, partial_noise_like
from nnugen.diffusion import (
    Denoiser,
    batch_timesteps,
    partial_start,
    q_sample,
    sampling_timesteps,
    step_alphas,
)
from nnugen.samplers import ddim_invert_step, ddim_step
from nnugen.samplers.ddim_inversion import check_fixed_point, fixed_point_refine


def check_strength(strength: float) -> float:
    """Return ``strength`` as a float if it lies in (0, 1]; ValueError saying what to pass otherwise."""
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0 < strength <= 1:
        raise ValueError(f"strength must be a number in (0, 1] (the fraction of the noise schedule to noise up to; "
                         f"1 = pure noise, pDDPM/AnoDDPM use 0.25 to 0.5), got {strength!r}")
    return float(strength)


def _check_inputs(image: Tensor, alphas_cumprod: Tensor, steps: int, noise: str) -> None:
    if image.ndim < 3:
        raise ValueError(f"image must be (B, C, *spatial), got shape {tuple(image.shape)}")
    if alphas_cumprod.ndim != 1 or alphas_cumprod.numel() < 1:
        raise ValueError(f"alphas_cumprod must be the 1D (T,) alpha-bar of the training schedule, got shape "
                         f"{tuple(alphas_cumprod.shape)}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1 (DDIM steps from t0 down to 0), got {steps!r}")
    if noise not in NOISES:
        raise ValueError(f"noise must be one of {NOISES} (simplex: AnoDDPM; filtered: smooth Gaussian), got "
                         f"{noise!r}")


@torch.no_grad()
def counterfactual(
    denoise: Denoiser,
    image: Tensor,
    alphas_cumprod: Tensor,
    strength: float,
    steps: int,
    noise: str = "gaussian",
    inversion: bool = False,
    generator: torch.Generator | None = None,
    spacing: str = "uniform",
    *,
    inversion_iterations: int = 0,
    inversion_tolerance: float = 0.0,
) -> Tensor:
    """The pseudo-healthy image (B, C, *spatial) for ``image`` (B, C, *spatial).

    Args:
        denoise: ``denoise(x_t, t) -> x0_hat`` of a model trained on healthy cases only.
        image: the input, in the intensity range the model was trained in.
        alphas_cumprod: (T,) alpha-bar of the training schedule.
        strength: in (0, 1]; noising starts at t0 = partial_start(strength, T) = round(strength * T) - 1.
        steps: DDIM steps from t0 down to 0 (sampling_timesteps); capped at t0 + 1, one per training step, so a
            configured step count works at every strength.
        noise: "gaussian" (pDDPM, THOR), "simplex" (AnoDDPM) or "filtered" for the partial-noising draw
            (partial_noise.py); ignored with inversion.
        inversion: encode with deterministic DDIM inversion up to t0 instead of drawing noise.
        generator: the only source of randomness (the partial-noising draw); the result is a function of it.
        spacing: where the steps lie between t0 and 0, a sampling_timesteps spacing (sampler.spacing).
        inversion_iterations, inversion_tolerance: with inversion, the fixed-point iterations per step (0 = plain
            DDIM inversion) and the max abs change that stops them (ddim_inversion.fixed_point_refine).
    """
    return seeded_counterfactuals(denoise, image, alphas_cumprod, (check_strength(strength),), steps, noise,
                                  inversion, (generator,), spacing=spacing, inversion_iterations=inversion_iterations,
                                  inversion_tolerance=inversion_tolerance)[0]


@torch.no_grad()
def multi_strength_counterfactuals(
    denoise: Denoiser,
    image: Tensor,
    alphas_cumprod: Tensor,
    strengths: Sequence[float],
    steps: int,
    noise: str = "gaussian",
    inversion: bool = False,
    generator: torch.Generator | None = None,
    max_batch: int = 1,
    spacing: str = "uniform",
) -> Tensor:
    """Counterfactuals at several strengths, stacked as (S, B, C, *spatial) in the order of ``strengths``.

    Small strengths keep healthy detail but leave large lesions in place; large strengths remove them but alter
    healthy tissue too; averaging the residuals over strengths (ensemble_map) trades the two off (Behrendt et al.
    2023 and Bercea et al. 2024 combine several noise levels). One generator serves all strengths in turn.
    ``max_batch``: as in seeded_counterfactuals (1: one strength at a time).
    """
    return seeded_counterfactuals(denoise, image, alphas_cumprod, strengths, steps, noise, inversion, (generator,),
                                  max_batch, spacing)


@torch.no_grad()
def seeded_counterfactuals(
    denoise: Denoiser,
    image: Tensor,
    alphas_cumprod: Tensor,
    strengths: Sequence[float],
    steps: int,
    noise: str = "gaussian",
    inversion: bool = False,
    generators: Sequence[torch.Generator | None] = (None,),
    max_batch: int = 1,
    spacing: str = "uniform",
    *,
    inversion_iterations: int = 0,
    inversion_tolerance: float = 0.0,
) -> Tensor:
    """Counterfactuals of every generator (seed) at every strength, (K * S, B, C, *spatial), seed-major: generator k's
    S strengths are rows k * S ... k * S + S - 1 (as seed_averaged_residuals reads them).

    Each generator draws the noise of its strengths in turn, as S calls of ``counterfactual`` would, so a member's
    noise does not depend on ``max_batch``. The members, all seeds of a strength before the next strength, are then
    denoised in groups of max(1, max_batch // B): stacked on the batch axis, one sampler loop and one denoiser call
    per step for the group, each strength on its own DDIM grid (per-sample t; a strength with fewer steps than the
    others leaves the batch when it is done). Every member gets exactly the updates it gets alone, so results equal
    one-at-a-time results up to the denoiser's float round-off across batch sizes.

    Args (the others as in ``counterfactual``):
        generators: one per seed; None draws from the global RNG.
        max_batch: the most samples (members x B) per denoiser call, to bound memory; 1 runs one member at a time.
            Above B, ``denoise`` must read t per sample (the samplers' contract), not t[0].
        spacing: each strength's grid from its t0 down to 0, placed by this sampling_timesteps spacing.
        inversion_iterations, inversion_tolerance: as in ``counterfactual``; a member stops iterating on its own
            convergence, so batching does not change it.
    """
    if isinstance(strengths, (int, float)) or len(strengths) == 0:
        raise ValueError(f"strengths must be a non-empty sequence of numbers in (0, 1], e.g. (0.25, 0.5, 0.75); got "
                         f"{strengths!r}")
    strengths = [check_strength(strength) for strength in strengths]
    _check_inputs(image, alphas_cumprod, steps, noise)
    if len(generators) == 0:
        raise ValueError("generators must hold at least one torch.Generator (or None), one per seed")
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ValueError(f"max_batch must be an integer >= 1 (1 = one counterfactual at a time), got {max_batch!r}")
    check_fixed_point(inversion_iterations, inversion_tolerance)
    refine = (inversion_iterations, inversion_tolerance)
    train_timesteps = alphas_cumprod.shape[0]
    starts = [partial_start(strength, train_timesteps) for strength in strengths]
    grids = [sampling_timesteps(train_timesteps, min(steps, t0 + 1), start=t0, spacing=spacing,
                                alphas_cumprod=alphas_cumprod) for t0 in starts]
    # (abar_t, abar_s) per step of each strength, read on the host once per call (one device sync at most)
    host_alphas = alphas_cumprod.detach().to("cpu", torch.float64)
    pairs = [step_alphas(host_alphas, grid) for grid in grids]
    # 1. Every member's start, in the order of one-at-a-time calls: generator k draws for strength 0, 1, ... in turn.
    first = {(k, s): image if inversion else _noised(image, alphas_cumprod, t0, noise, generator)
             for k, generator in enumerate(generators) for s, t0 in enumerate(starts)}
    # 2. Groups of members, strength-major, so a strength's members lie next to each other in the batch.
    order = [(k, s) for s in range(len(strengths)) for k in range(len(generators))]
    size = max(1, max_batch // image.shape[0])
    done: dict[tuple[int, int], Tensor] = {}
    for begin in range(0, len(order), size):
        group = order[begin:begin + size]
        done.update(zip(group, _denoise_group(denoise, [first[m] for m in group], [s for _, s in group], grids,
                                              pairs, inversion, refine)))
    return torch.stack([done[k, s] for k in range(len(generators)) for s in range(len(strengths))])


def _noised(image: Tensor, alphas_cumprod: Tensor, t0: int, noise: str, generator: torch.Generator | None) -> Tensor:
    # x_t0 = sqrt(abar_t0) x_0 + sqrt(1 - abar_t0) eps (Ho et al. 2020 eq. 4), eps Gaussian, simplex or filtered.
    eps = partial_noise_like(noise, image, generator)
    return q_sample(image, batch_timesteps(t0, image), alphas_cumprod, eps)


def _denoise_group(denoise: Denoiser, starts: list[Tensor], strength_of: list[int], grids: list[Tensor],
                   pairs: list[list[tuple[float, float]]], inversion: bool,
                   refine: tuple[int, float] = (0, 0.0)) -> list[Tensor]:
    """The counterfactuals (B, C, *spatial) of one group of members, from their starts (x_t0, or the image with
    inversion); ``strength_of`` names each member's grid in ``grids`` and its step_alphas in ``pairs``; a strength's
    members are consecutive; ``refine`` = (iterations, tolerance) of the inversion's fixed-point iteration."""
    runs: list[tuple[int, list[Tensor]]] = []  # (strength, its members' starts)
    for start, strength in zip(starts, strength_of):
        if runs and runs[-1][0] == strength:
            runs[-1][1].append(start)
        else:
            runs.append((strength, [start]))
    xs = [torch.cat(members) for _, members in runs]
    down = [pairs[strength] for strength, _ in runs]  # (abar_t, abar_s) per step
    if inversion:
        # 1. Deterministic encoding x_0 -> x_t0 along the DDIM ODE over the same grid, visited upwards (ddim_invert:
        #    from abar_s = 1 at the clean image to each next, noisier abar_t).
        up = [[(abar_s, abar_t) for abar_t, abar_s in reversed(pairs)] for pairs in down]
        xs = _lockstep(denoise, xs, [grids[strength].flip(0).tolist() for strength, _ in runs], up, ddim_invert_step,
                       refine)
    # 2. Deterministic DDIM (eta = 0) from t0 to the clean estimate: the pseudo-healthy image.
    xs = _lockstep(denoise, xs, [grids[strength].tolist() for strength, _ in runs], down,
                   lambda x, x0_hat, abar_t, abar_s: ddim_step(x, x0_hat, abar_t, abar_s, 0.0))
    return [member for x, (_, members) in zip(xs, runs) for member in x.split([m.shape[0] for m in members])]


def _lockstep(denoise: Denoiser, xs: list[Tensor], timesteps: list[list[int]],
              alphas: list[list[tuple[float, float]]], step: Callable[[Tensor, Tensor, float, float], Tensor],
              refine: tuple[int, float] = (0, 0.0)) -> list[Tensor]:
    """Run every x of ``xs`` (N_j, C, *spatial) over its own training indices ``timesteps[j]`` with the update
    ``step(x, x0_hat, *alphas[j][i])`` (ddim_step, ddim_invert_step), all x still running sharing one denoiser call per
    step: the loop of ddim / ddim_invert, batched over grids of one length or shorter ones that stop early. With
    ``refine`` = (N > 0, tolerance) each step of ddim_invert_step is then refined by fixed_point_refine, also one
    shared denoiser call per iteration."""
    xs = list(xs)
    for i in range(max(len(grid) for grid in timesteps)):
        running = [j for j, grid in enumerate(timesteps) if i < len(grid)]

        def denoise_all(group: list[Tensor], i: int = i, running: list[int] = running) -> list[Tensor]:
            x = group[0] if len(group) == 1 else torch.cat(group)
            t = torch.cat([torch.full((g.shape[0],), timesteps[j][i], dtype=torch.long, device=x.device)
                           for j, g in zip(running, group)])
            return list(denoise(x, t).split([g.shape[0] for g in group]))

        previous = [xs[j] for j in running]
        for j, x0_hat in zip(running, denoise_all(previous)):
            xs[j] = step(xs[j], x0_hat, *alphas[j][i])
        if refine[0] > 0:
            refined = fixed_point_refine(denoise_all, previous, [xs[j] for j in running],
                                         [alphas[j][i] for j in running], *refine)
            for j, x in zip(running, refined):
                xs[j] = x
    return xs
