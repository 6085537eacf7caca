"""A network's size at a glance, from ``torchinfo.summary``: parameters (total / trainable), the output shape of every
encoder and decoder stage, and torchinfo's activation estimate ("forward/backward pass size": the bytes of every
layer's output at the given input, which training keeps for the backward pass).

The dry run is meant for the meta device (``torch.device("meta")``): shapes and parameter counts come out as on the
CPU or GPU, without memory or arithmetic, so a plan's full patch and batch cost nothing to summarise.

Stages: the children of an ``encoder`` / ``decoder`` ``nn.ModuleList`` (``TimeConditionedUNet``: one entry per
resolution level, decoder from the bottleneck up), or the ``encoder`` / ``decoder`` modules themselves where they are
not lists (the autoencoder: the latent and the reconstruction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torchinfo
from torch import Tensor, nn

STAGE_PARENTS = ("encoder", "decoder")


@dataclass(frozen=True)
class NetworkSummary:
    """``input_shapes``: the shapes the dry run was given, e.g. ((B, C_in, *patch), (B,)); ``stage_shapes``: (stage
    name, output shape (B, C, *spatial)) in forward order; ``activation_bytes``: torchinfo's forward/backward pass
    size in bytes."""

    network: str
    input_shapes: tuple[tuple[int, ...], ...]
    total_parameters: int
    trainable_parameters: int
    stage_shapes: tuple[tuple[str, tuple[int, ...]], ...]
    activation_bytes: int

    def lines(self) -> list[str]:
        """A few printable lines (parameters, activations, one line per stage)."""
        inputs = ", ".join("x".join(map(str, shape)) for shape in self.input_shapes)
        stages = [f"    {name:<12} {'x'.join(map(str, shape))}" for name, shape in self.stage_shapes]
        return [f"{self.network}: {self.total_parameters:,} parameters ({self.trainable_parameters:,} trainable); "
                f"activations {self.activation_bytes / 2**20:,.1f} MiB forward/backward at input {inputs}",
                *stages]


def stage_modules(network: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of the network's encoder and decoder stages (see the module docstring)."""
    stages = []
    for parent in STAGE_PARENTS:
        module = getattr(network, parent, None)
        if isinstance(module, nn.ModuleList):
            stages += [(f"{parent}.{i}", child) for i, child in enumerate(module)]
        elif isinstance(module, nn.Module):
            stages.append((parent, module))
    return stages


def network_summary(network: nn.Module, inputs: Sequence[Tensor]) -> NetworkSummary:
    """Summarise ``network`` on one forward pass of ``inputs`` (its positional arguments, on the network's device;
    the meta device makes it free). ValueError if the network has no encoder / decoder stages to report."""
    stages = stage_modules(network)
    if not stages:
        raise ValueError(f"{type(network).__name__} has no encoder / decoder stages to summarise; pass a U-Net-like "
                         "network with 'encoder' and 'decoder' modules")
    statistics = torchinfo.summary(network, input_data=list(inputs), depth=100, verbose=0,
                                   device=inputs[0].device)
    # torchinfo reports a module once per call: the first call of a stage module is its output
    outputs = {}
    for layer in statistics.summary_list:
        outputs.setdefault(id(layer.module), layer.output_size)
    shapes = tuple((name, tuple(int(n) for n in outputs[id(module)])) for name, module in stages
                   if id(module) in outputs)
    return NetworkSummary(type(network).__name__, tuple(tuple(x.shape) for x in inputs), int(statistics.total_params),
                          int(statistics.trainable_params), shapes, int(statistics.total_output_bytes))
