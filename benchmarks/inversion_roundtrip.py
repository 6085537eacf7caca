"""Round trip of DDIM inversion on a trained model (issue 18): x0 -> inversion -> DDIM (eta 0) -> x0', with plain
DDIM inversion and with the fixed-point inversion of ``anomaly.inversion_iterations`` (Pan et al. 2023).

    python benchmarks/inversion_roundtrip.py MODEL_FOLDER -f 0 IMAGES_FOLDER [--steps 5 20 50]
        [--iterations 0 20] [--tolerance 1e-4] [--strength 1.0] [--seed 0] [--slices 8] [--max-cases 4]
        [-chk checkpoint_final.pth]

MODEL_FOLDER: a trained NnugenAnomalyTrainer or NnugenDDPMTrainer folder (``<Trainer>__nnugenPlans__<config>``) of an
image-only, noise-prediction-process model. IMAGES_FOLDER: healthy validation cases in nnU-Net's raw format
(``CASE_0000.nii.gz``, ...). Each case is preprocessed by nnU-Net's preprocessor from the model folder's plans and
mapped to the model's [-1, 1] (the plans' intensity map); 2D models take ``--slices`` slices of it, drawn with
``--seed`` among the slices that are not empty (0 = all). The round trip is the anomaly task's own inversion path
(``counterfactual_ensemble`` with ``anomaly.inversion``: EMA weights, x0 clipped to [-1, 1], nnU-Net's sliding
windows over inputs larger than the patch), from ``--strength`` (1 = up to pure noise, t = T - 1) with ``--steps``
DDIM steps on the plans' spacing. Printed per steps x iterations: the mean and max abs error in the model's [-1, 1]
intensity over all voxels (max over cases), the network evaluations per image and the wall time.
"""

from __future__ import annotations

import argparse
import platform
import time
from dataclasses import replace
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_folder", type=Path, help="<Trainer>__nnugenPlans__<configuration> of a trained model")
    parser.add_argument("-f", "--fold", default="0", help="the fold (0-4 or all)")
    parser.add_argument("images_folder", type=Path, help="healthy validation images, nnU-Net raw format")
    parser.add_argument("-chk", "--checkpoint", default="checkpoint_final.pth")
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 20, 50], help="DDIM steps of the round trip")
    parser.add_argument("--iterations", type=int, nargs="+", default=[0, 20],
                        help="fixed-point iterations per inversion step (0 = plain DDIM inversion)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="max abs change that stops an iteration")
    parser.add_argument("--strength", type=float, default=1.0, help="invert up to this fraction of the schedule")
    parser.add_argument("--seed", type=int, default=0, help="picks the 2D slices")
    parser.add_argument("--slices", type=int, default=8, help="slices per case for 2D models (0 = all)")
    parser.add_argument("--max-cases", type=int, default=0, help="the first N cases only (0 = all)")
    parser.add_argument("-device", default="cpu")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except ValueError as error:
        print(f"error: {error}")
        return 1


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch
    from acvl_utils.cropping_and_padding.padding import pad_nd_image
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnugen.config import AnomalySettings, section_of
    from nnugen.models.counterfactual_ensemble import counterfactual_ensemble
    from nnugen.models.image_generator import ImageGenerator
    from nnugen.models.intensity_map import IntensityMap
    from nnugen.models.sampling import SamplingRequest
    from nnugen.run.ext_trainer_path import ensure_ext_trainer_path

    ensure_ext_trainer_path()
    fold = args.fold if args.fold == "all" else int(args.fold)
    device = torch.device(args.device)
    predictor = nnUNetPredictor(device=device, use_mirroring=False)
    predictor.initialize_from_trained_model_folder(str(args.model_folder), [fold], args.checkpoint)
    network = predictor.network
    network.load_state_dict(predictor.list_of_parameters[0])
    network.to(device).eval()
    generator = getattr(network, "generator", network)
    if not isinstance(generator, ImageGenerator) or generator.generation.mode != "image":
        raise ValueError(f"{args.model_folder} is not an image-only anomaly or DDPM model; pass one of those")
    if generator.diffusion.process != "ddpm":
        raise ValueError(f"DDIM inversion needs a noise-prediction diffusion model, not process "
                         f"{generator.diffusion.process!r}")
    plans, manager, dataset = predictor.plans_manager, predictor.configuration_manager, predictor.dataset_json
    intensity = IntensityMap(section_of(manager.configuration, args.model_folder.name.rsplit('__', 1)[-1]).intensity)
    channels = len(dataset["channel_names"])
    if generator.image_channels != channels:
        raise ValueError(f"the model has {generator.image_channels} image channels of {channels} inputs (an anatomy "
                         f"condition channel?); this script measures image-only models")

    files = sorted(args.images_folder.glob("*_0000.nii.gz"))
    if not files:
        raise ValueError(f"no CASE_0000.nii.gz files in {args.images_folder}; pass nnU-Net raw images")
    cases = [f.name[: -len("_0000.nii.gz")] for f in files][: args.max_cases or None]
    two_d = len(manager.patch_size) == 2
    preprocessor = manager.preprocessor_class(verbose=False)
    rng = np.random.default_rng(args.seed)
    images = {}
    for case in cases:
        inputs = [str(args.images_folder / f"{case}_{k:04d}.nii.gz") for k in range(channels)]
        data, _, _ = preprocessor.run_case(inputs, None, plans, manager, dataset)
        x = torch.from_numpy(np.asarray(data, dtype=np.float32))
        if two_d:  # (C, Z, Y, X) -> slices (Z, C, Y, X), the ones with content
            x = x.transpose(0, 1)
            keep = np.flatnonzero((x.flatten(1) != 0).any(1).numpy())
            if args.slices and len(keep) > args.slices:
                keep = np.sort(rng.choice(keep, args.slices, replace=False))
            x = x[torch.from_numpy(keep)]
        else:
            x = x[None]
        # smaller than the patch: padded with the preprocessed zero as nnU-Net's predictor pads; errors on the image
        x, slicer = pad_nd_image(x, manager.patch_size, "constant", {"value": 0}, True)
        images[case] = (intensity.to_model(x).to(device), tuple(slicer))

    evaluations = [0]
    model_output = generator.model_output

    def counted(x_t, t, condition, use_ema=False):
        evaluations[0] += x_t.shape[0]
        return model_output(x_t, t, condition, use_ema)

    generator.model_output = counted
    print(f"# inversion round trip: {args.model_folder} fold {args.fold} ({args.checkpoint}), {len(cases)} cases "
          f"of {args.images_folder}, strength {args.strength}, tolerance {args.tolerance}, seed {args.seed}; "
          f"{platform.processor() or platform.machine()}, {args.device}, torch {torch.__version__}\n")
    print("| steps | inversion | mean abs error | max abs error | network evaluations per image | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for steps in args.steps:
        for iterations in args.iterations:
            anomaly = AnomalySettings(strengths=(args.strength,), inversion=True, inversion_iterations=iterations,
                                      inversion_tolerance=args.tolerance)
            request = SamplingRequest(replace(generator.sampler, steps=steps, seeds=1), args.seed)
            total, count, worst, used, start = 0.0, 0, 0.0, 0, time.perf_counter()
            evaluations[0] = 0
            for image, slicer in images.values():
                ensemble = counterfactual_ensemble(generator, image, None, None, anomaly, (args.strength,), request)
                error = (ensemble.members[0] - ensemble.reference).abs()[slicer]
                total, count, worst = total + float(error.sum()), count + error.numel(), max(worst, float(error.max()))
                used += image.shape[0]
            what = "plain DDIM" if iterations == 0 else f"fixed-point, <= {iterations} iterations"
            print(f"| {steps} | {what} | {total / count:.3g} | {worst:.3g} | {evaluations[0] / used:.1f} | "
                  f"{time.perf_counter() - start:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
