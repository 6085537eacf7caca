"""Training time per iteration, diffusion segmentation vs nnU-Net's baseline, on the same plan and batch.

Builds both networks exactly as their trainers do (``build_network_architecture`` on the plans), then times a full
optimisation step (forward, loss, backward, SGD step) on a random batch at the plan's patch size, alternating the
two models so that machine noise hits both alike. Prints the median seconds per step and the ratio.

    python benchmarks/train_step_time.py PATH/TO/nnugenPlans.json PATH/TO/dataset.json [-c 3d_fullres] [-n 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnugen.trainers.nnugen_baseline_trainer import NnugenBaselineTrainer
from nnugen.trainers.nnugen_diffseg_trainer import NnugenDiffSegTrainer, one_hot


def build(trainer_class, plans: dict, dataset_json: dict, configuration: str):
    manager = PlansManager(plans)
    configuration_manager = manager.get_configuration(configuration)
    channels = determine_num_input_channels(manager, configuration_manager, dataset_json)
    classes = manager.get_label_manager(dataset_json).num_segmentation_heads
    network = trainer_class.build_network_architecture(manager, configuration_manager, channels, classes, False)
    return network, channels, classes, configuration_manager


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("plans")
    parser.add_argument("dataset_json")
    parser.add_argument("-c", default="3d_fullres")
    parser.add_argument("-n", type=int, default=10, help="timed steps per model (after 2 warm-up steps)")
    args = parser.parse_args()
    plans = json.load(open(args.plans))
    dataset_json = json.load(open(args.dataset_json))
    torch.manual_seed(0)
    baseline, channels, classes, configuration = build(NnugenBaselineTrainer, plans, dataset_json, args.c)
    diffusion = build(NnugenDiffSegTrainer, plans, dataset_json, args.c)[0]
    batch = plans["configurations"][args.c]["nnugen"]["tasks"]["segmentation"]["memory"]["batch_size"]
    patch = configuration.patch_size
    image = torch.randn(batch, channels, *patch)
    target = torch.randint(0, classes, (batch, 1, *patch))
    cross_entropy = torch.nn.CrossEntropyLoss()

    def baseline_step(optimizer):
        loss = cross_entropy(baseline(image), target[:, 0])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    def diffusion_step(optimizer):
        diffusion(image, one_hot(target, classes)).backward()
        optimizer.step()
        optimizer.zero_grad()

    runs = {"baseline": (baseline_step, torch.optim.SGD(baseline.parameters(), 1e-2, momentum=0.99)),
            "diffusion": (diffusion_step, torch.optim.SGD(diffusion.parameters(), 1e-2, momentum=0.99))}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for step in range(args.n + 2):
        for name, (function, optimizer) in runs.items():
            start = time.perf_counter()
            function(optimizer)
            if step >= 2:
                times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"configuration {args.c}, patch {patch}, batch {batch}, torch threads {torch.get_num_threads()}")
    for name, value in medians.items():
        print(f"{name:>10}: {value:.3f} s per training step (median of {args.n})")
    print(f"     ratio: {medians['diffusion'] / medians['baseline']:.2f} (diffusion / baseline)")


if __name__ == "__main__":
    main()
