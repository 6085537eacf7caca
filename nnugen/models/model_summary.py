"""The network summary of a task's model (``nnugen.networks.network_summary``, on torchinfo) at the planned patch and
batch size, built from the plans alone, its forward pass a dry run on the meta device (no activation is allocated and
nothing computed), so ``nnugen_plan`` shows it for every task it plans and the trainers log it once when training
starts.

What is summarised: the denoiser U-Net of the diffusion tasks (segmentation, ddpm, ldm on its latent patch, anomaly
in its image or latent space), fed (batch, C_in, *patch) and the timesteps (batch,); the autoencoder itself, fed
(batch, C, *patch). nnU-Net's own network (the baseline) is not nnugen's and is left out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from nnugen.config import TaskSettings, section_of
from nnugen.models.model_builders import MODEL_BUILDERS, ModelSpec, build_model
from nnugen.networks.autoencoder import Autoencoder
from nnugen.networks.network_summary import NetworkSummary, network_summary


def _summarised(model: nn.Module, patch: Sequence[int]) -> tuple[nn.Module, tuple[int, ...], bool]:
    """(network, its patch, whether it takes timesteps) inside a task's model."""
    if isinstance(model, Autoencoder):
        return model, tuple(patch), False
    generator = getattr(model, "generator", model)  # AnomalySegmenter holds an ImageGenerator
    network = getattr(generator, "denoiser", None)
    network = model.network if network is None else network  # DiffusionSegmenter holds its U-Net as .network
    return network, tuple(getattr(generator, "patch_size", patch)), True


def task_network_summary(section: str, spec: ModelSpec, batch_size: int) -> NetworkSummary:
    """The summary of task ``section``'s network (a key of ``MODEL_BUILDERS``) for ``spec`` at ``batch_size``."""
    # the summary's own model draws its random initial weights without touching the run's random state, so a seeded
    # training is the same with or without the summary in its log
    with torch.random.fork_rng(devices=[]):
        network, patch, timed = _summarised(build_model(section, spec), spec.patch_size)
    network = network.to("meta")  # a model of its own, built for this summary: its weights are dropped
    with torch.device("meta"):
        inputs = [torch.zeros(batch_size, network.in_channels, *patch)] + ([torch.zeros(batch_size)] if timed else [])
        return network_summary(network, inputs)


def plan_task_summary(plans: dict, dataset_json: dict, configuration: str, section: str,
                      settings: TaskSettings | None = None) -> NetworkSummary:
    """The summary of task ``section`` of an nnugenPlans ``configuration`` with nnU-Net's channel counts (input
    channels as nnU-Net determines them, one output per segmentation head) and the memory plan's batch size;
    ``settings``: the task's settings with a variant's changes (default: the plans' own)."""
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(plans)
    manager = plans_manager.get_configuration(configuration)
    nnugen = section_of(manager.configuration, configuration)
    settings = settings or nnugen.task(section)
    spec = ModelSpec(settings, nnugen, determine_num_input_channels(plans_manager, manager, dataset_json),
                     plans_manager.get_label_manager(dataset_json).num_segmentation_heads, tuple(manager.patch_size))
    return task_network_summary(section, spec, settings.memory.batch_size)


def plan_summaries(plans: dict, dataset_json: dict,
                   configurations: Sequence[str] = ()) -> list[tuple[str, str, NetworkSummary]]:
    """(configuration, task, summary) for every task with an nnugen network in each of ``configurations`` (default:
    every configuration of the plans with an nnugen section)."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(plans)
    resolved = {name: plans_manager.get_configuration(name).configuration
                for name in (configurations or plans_manager.available_configurations)}
    return [(name, task, plan_task_summary(plans, dataset_json, name, task))
            for name, configuration in resolved.items() if "nnugen" in configuration
            for task in section_of(configuration, name).tasks if task in MODEL_BUILDERS]


def log_task_summary(log: Callable[..., None], plans: dict, dataset_json: dict, configuration: str, task: str,
                     settings: TaskSettings | None = None) -> None:
    """``log`` (a trainer's ``print_to_log_file``) the summary of task ``task``'s network, line by line; nothing for a
    task whose network is nnU-Net's own (the baseline)."""
    if task in MODEL_BUILDERS:
        for line in plan_task_summary(plans, dataset_json, configuration, task, settings).lines():
            log(line)
