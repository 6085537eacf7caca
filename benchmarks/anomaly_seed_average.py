"""How the seeds of a counterfactual ensemble are combined: the residual of the seeds' mean counterfactual against the
mean of the seeds' residuals, on the models ``anomaly_benchmark.py`` trained (docs/benchmarks.md).

    python benchmarks/anomaly_seed_average.py --work-dir W [--configs 0.2:1 0.5:8 0.25/0.5/0.75:8] [--steps 10]

Each config is STRENGTHS:SEEDS (strengths separated by /). The maps are computed in this process with the trained
NnugenAnomalyTrainer of W (fold 0, checkpoint_final), post-processed as nnugen_predict does (median filter, body
mask), brought back to the original geometry and scored like the benchmark: threshold with the best Dice on the
tuning-family cases, scores on the test-family and held-out healthy cases. One base seed for every case (nnugen_predict
derives one per case), so the numbers differ slightly from the benchmark's rows with the same settings.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from anomaly_benchmark import FOLDER, _read, case_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True, help="the work folder of anomaly_benchmark.py")
    parser.add_argument("--configs", nargs="+", default=["0.2:1", "0.2:8", "0.5:1", "0.5:4", "0.5:8", "0.5:16",
                                                         "0.25/0.5/0.75:8"])
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps per strength")
    parser.add_argument("--seed", type=int, nargs="+", default=[0],
                        help="base seeds (member k of a case uses seed + k); one table row per base seed")
    args = parser.parse_args()

    import os

    import torch

    root = args.work_dir.resolve()
    for name, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"), ("nnUNet_results", "results")):
        os.environ[name] = str(root / sub)
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnugen.anomaly import best_dice_threshold, score_cases
    from nnugen.inference.case_export import maps_to_original_geometry
    from nnugen.run.ext_trainer_path import ensure_ext_trainer_path

    raw = root / "raw" / FOLDER
    _, held_out, tuning, test = case_split(raw)
    split = {c: "Ts" if c in test else "Tr" for c in [*held_out, *tuning, *test]}
    labels = {c: _read(raw / f"labels{s}" / f"{c}.nii.gz") > 0 for c, s in split.items()}

    ensure_ext_trainer_path()
    configuration = next(root.glob(f"results/{FOLDER}/NnugenAnomalyTrainer__nnugenPlans__*")).name.rsplit("__", 1)[1]
    model = root / "results" / FOLDER / f"NnugenAnomalyTrainer__nnugenPlans__{configuration}"
    predictor = nnUNetPredictor(device=torch.device("cpu"), use_mirroring=False)
    predictor.initialize_from_trained_model_folder(str(model), [0], "checkpoint_final.pth")
    network = predictor.network
    network.load_state_dict(predictor.list_of_parameters[0])
    network.eval()
    plans, manager, dataset = predictor.plans_manager, predictor.configuration_manager, predictor.dataset_json
    preprocessor = manager.preprocessor_class(verbose=False)
    two_d = configuration == "2d"
    cases = {}
    for case, s in split.items():
        files = sorted((raw / f"images{s}").glob(f"{case}_[0-9][0-9][0-9][0-9].nii.gz"))
        data, _, properties = preprocessor.run_case([str(f) for f in files], None, plans, manager, dataset)
        image = torch.from_numpy(data)[:, 0] if two_d else torch.from_numpy(data)
        cases[case] = (image[None].float(), properties)

    def original(anomaly_map: torch.Tensor, properties: dict) -> np.ndarray:
        volume = anomaly_map[0].numpy()
        volume = volume[:, None] if two_d else volume
        back = maps_to_original_geometry(volume, properties, plans, manager)[0]
        return back[0] if two_d else back

    print("| strengths | seeds | seeds combined by | base seed | pixel AUPRC (pooled) | per volume | Dice | "
          "image AUROC |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    anomaly = network.anomaly
    for config in args.configs:
        strengths_text, seeds_text = config.split(":")
        strengths, seeds = [float(v) for v in strengths_text.split("/")], int(seeds_text)
        modes = ("counterfactual", "residual") if seeds > 1 else ("counterfactual",)
        for mode, base in ((m, b) for m in modes for b in args.seed):
            network.anomaly = replace(anomaly, seed_average=mode)
            sampler = replace(network.planned_sampler, steps=args.steps, seeds=seeds)
            start = time.perf_counter()
            with torch.no_grad(), network.sampling(sampler, seed=base, strengths=strengths):
                maps = {case: original(network.run(x).map, props) for case, (x, props) in cases.items()}
            threshold, _ = best_dice_threshold([maps[c] for c in tuning], [labels[c] for c in tuning])
            scored = [*test, *held_out]
            s = score_cases({c: maps[c] for c in scored}, {c: labels[c] for c in scored}, threshold, 10)
            what = "mean counterfactual" if mode == "counterfactual" else "mean of residuals"
            print(f"| {strengths_text} | {seeds} | {what if seeds > 1 else '-'} | {base} | {s['pixel_auprc']:.3f} | "
                  f"{s['pixel_auprc_per_volume_mean']:.3f} | {s['dice_at_threshold']:.3f} | {s['image_auroc']:.3f} |"
                  f"  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
