"""Samplers: stateless functions with one signature (see signature.Sampler), looked up by name."""

from nnugen.samplers.ddim import ddim, ddim_sigma, ddim_step
from nnugen.samplers.ddim_inversion import ddim_invert, ddim_invert_step
from nnugen.samplers.ddpm import ddpm, ddpm_step
from nnugen.samplers.dpm_solver import dpm_solver_pp, dpm_solver_pp_step
from nnugen.samplers.rflow_euler import rflow_euler, rflow_timesteps
from nnugen.samplers.signature import Callback, Sampler

SAMPLERS: dict[str, Sampler] = {"ddpm": ddpm, "ddim": ddim, "dpm_solver++": dpm_solver_pp}


def get_sampler(name: str) -> Sampler:
    """The sampler registered under `name`; ValueError listing the choices otherwise."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name]


__all__ = [
    "SAMPLERS",
    "Callback",
    "Sampler",
    "ddim",
    "ddim_invert",
    "ddim_invert_step",
    "ddim_sigma",
    "ddim_step",
    "ddpm",
    "ddpm_step",
    "dpm_solver_pp",
    "dpm_solver_pp_step",
    "get_sampler",
    "rflow_euler",
    "rflow_timesteps",
]
