"""What an anomaly map costs against what it finds: pixel AUPRC, Dice and healthy false positives against network
evaluations per window, over seeds, strengths, DDIM steps and inversion, on one trained anomaly model
(docs/benchmarks.md "The anomaly map's cost against its quality").

    python benchmarks/anomaly_frontier.py --work-dir W [--configs 8:0.25/0.5/0.75:10 1:0.5:10:invert20 ...]
        [--base-seeds 0 1 2] [--within 0.1]

W holds nnUNet_raw, nnUNet_preprocessed and nnUNet_results (the ``nnugen_work`` of ``nnugen_demo --real --parts
anomaly``) or raw, preprocessed and results (anomaly_benchmark.py's work folder), with one lesion dataset whose
dataset.json has ``nnugen_lesions`` and its trained NnugenAnomalyTrainer (fold 0, checkpoint_final).

A config is SEEDS:STRENGTHS:STEPS[:invert[N]]: seeds per strength, strengths separated by /, DDIM steps per strength,
and ``invert`` for the inversion mode (DDIM inversion instead of noise; ``invertN``: with N fixed-point iterations per
step, Pan et al. 2023). For each config, every map goes through nnU-Net's own sliding window over the model's map at
every erosion of its region, as the trainer's final validation computes it; the erosion and threshold with the best
Dice on the tuning-family cases are chosen, as the trainer chooses them; the test-family cases and the held-out healthy
cases are scored at them (in the preprocessed geometry). The network evaluations per window are counted (every sample
of every denoiser call, over the sliding-window tiles). One base seed for every case (nnugen_predict derives one per
case), so the planned config's row differs slightly from the demo's held-out figures.

The last table marks the frontier (no other config is both cheaper and better in mean AUPRC) and the cheapest config
whose AUPRC at every base seed (every noise draw) is within ``--within`` (relative) of the best config's mean. The
planner's setting is the cheapest that passes this on every model measured (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

DEFAULT_CONFIGS = (
    "8:0.25/0.5/0.75:20",  # the planner's setting
    "8:0.25/0.5/0.75:10",  # the demo's
    "8:0.25/0.5/0.75:5", "8:0.25/0.5/0.75:3",
    "4:0.25/0.5/0.75:10", "2:0.25/0.5/0.75:10", "1:0.25/0.5/0.75:10",
    "8:0.5:10", "8:0.25:10", "8:0.75:10", "8:0.5/0.75:10", "8:0.25/0.5:10",
    "4:0.25/0.5/0.75:5", "2:0.25/0.5/0.75:5", "1:0.25/0.5/0.75:5", "4:0.5:5", "1:0.5:5", "1:0.5:3",
    "1:0.25/0.5/0.75:10:invert", "1:0.25/0.5/0.75:10:invert20",
)


@dataclass(frozen=True)
class Config:
    seeds: int
    strengths: tuple[float, ...]
    steps: int
    inversion: bool = False
    inversion_iterations: int = 0

    @classmethod
    def parse(cls, text: str) -> Config:
        parts = text.split(":")
        if len(parts) not in (3, 4) or (len(parts) == 4 and not parts[3].startswith("invert")):
            raise SystemExit(f"a config is SEEDS:STRENGTHS:STEPS[:invert[N]], e.g. 8:0.25/0.5/0.75:10; got {text!r}")
        inversion = len(parts) == 4
        iterations = int(parts[3][len("invert"):] or 0) if inversion else 0
        return cls(int(parts[0]), tuple(float(s) for s in parts[1].split("/")), int(parts[2]), inversion, iterations)

    @property
    def name(self) -> str:
        strengths = "/".join(f"{s:g}" for s in self.strengths)
        fixed_point = f" + {self.inversion_iterations} fixed-point" if self.inversion_iterations else ""
        inversion = f", DDIM inversion{fixed_point}" if self.inversion else ""
        return f"{self.seeds} x {strengths} x {self.steps}{inversion}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _folders(work: Path) -> tuple[Path, Path, Path]:
    for names in (("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"), ("raw", "preprocessed", "results")):
        if all((work / n).is_dir() for n in names):
            return tuple(work / n for n in names)
    raise SystemExit(f"{work} holds neither nnUNet_raw/ nnUNet_preprocessed/ nnUNet_results/ nor raw/ preprocessed/ "
                     "results/: pass the work folder of nnugen_demo --parts anomaly or anomaly_benchmark.py")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--base-seeds", dest="base_seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--within", type=float, default=0.1,
                        help="the cheapest config whose AUPRC at every base seed is at least (1 - within) x the best "
                             "config's mean is named")
    parser.add_argument("--output", type=Path, default=None, help="results JSON (default W/anomaly_frontier.json)")
    args = parser.parse_args(argv)
    configs = [Config.parse(c) for c in args.configs]

    raw_root, preprocessed_root, results_root = _folders(args.work_dir.resolve())
    for name, folder in zip(("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"),
                            (raw_root, preprocessed_root, results_root)):
        os.environ[name] = str(folder)

    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from nnugen.anomaly import best_dice_threshold, choose_erosion, score_cases
    from nnugen.atomic_files import atomic_write_json
    from nnugen.models.anomaly_views import packed_dataset_json
    from nnugen.models.compile_policy import predictor_compile_off
    from nnugen.run.ext_trainer_path import ensure_ext_trainer_path

    raws = [d for d in raw_root.iterdir() if (d / "dataset.json").is_file()
            and "nnugen_lesions" in json.loads((d / "dataset.json").read_text())]
    if len(raws) != 1:
        raise SystemExit(f"expected one lesion dataset (nnugen_lesions in dataset.json) in {raw_root}, found "
                         f"{[d.name for d in raws]}")
    raw = raws[0]
    lesions = json.loads((raw / "dataset.json").read_text())["nnugen_lesions"]
    # the held-out healthy cases (none in a dataset.json without the key: every healthy case trained)
    held_out = lesions["healthy_cases"][len(lesions["healthy_cases"]) - int(lesions.get("held_out_healthy", 0)):]
    tuning = sorted(c for c in lesions["lesion_families"] if (raw / "labelsTr" / f"{c}.nii.gz").is_file())
    test = sorted(c for c in lesions["lesion_families"] if c not in tuning)
    split = {**{c: "Tr" for c in [*tuning, *held_out]}, **{c: "Ts" for c in test}}

    ensure_ext_trainer_path()
    model = next((results_root / raw.name).glob("NnugenAnomalyTrainer__*"))
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                                device=torch.device("cpu"), verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), [0], "checkpoint_final.pth")
    network = predictor.network
    network.load_state_dict(predictor.list_of_parameters[0])
    network.eval()
    planned, planned_sampler = network.anomaly, network.planned_sampler
    widest = planned.erode_search
    plans, manager, dataset_json = predictor.plans_manager, predictor.configuration_manager, predictor.dataset_json
    with predictor_compile_off():
        predictor.manual_initialization(network.erosion_search_view(widest), plans, manager, None,
                                        packed_dataset_json(dataset_json, widest + 1), predictor.trainer_name,
                                        None)
    preprocessor = manager.preprocessor_class(verbose=False)
    cases = {}
    for case, where in split.items():
        files = sorted((raw / f"images{where}").glob(f"{case}_[0-9][0-9][0-9][0-9]{dataset_json['file_ending']}"))
        label = raw / f"labels{where}" / f"{case}{dataset_json['file_ending']}"
        data, seg, _ = preprocessor.run_case([str(f) for f in files], str(label) if label.is_file() else None, plans,
                                             manager, dataset_json)
        lesion = np.zeros(data.shape[1:], bool) if seg is None else np.asarray(seg[0]) > 0
        cases[case] = (torch.from_numpy(np.ascontiguousarray(data)).float(), lesion)

    evaluations, windows = [0], [0]
    sampled = network.generator.ema if network.generator.ema is not None else network.generator.denoiser
    sampled.register_forward_hook(lambda m, inputs, out: evaluations.__setitem__(
        0, evaluations[0] + inputs[0].shape[0]))
    predictor.network.register_forward_hook(lambda m, inputs, out: windows.__setitem__(
        0, windows[0] + inputs[0].shape[0]))

    rows = []
    output = args.output or args.work_dir / "anomaly_frontier.json"
    partial = output.with_name(output.stem + "_rows.json")
    print(f"{raw.name}: {len(tuning)} tuning-family lesion cases choose the erosion (0..{widest}) and threshold; "
          f"{len(test)} test-family lesion cases and {len(held_out)} held-out healthy cases are scored", flush=True)
    print("| config | base seed | evaluations per window | erosion | pixel AUPRC (lesion cases) | pixel AUPRC (with "
          "healthy cases) | Dice | healthy pixels flagged | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for config in configs:
        for base in args.base_seeds:
            network.anomaly = replace(planned, inversion=config.inversion,
                                      inversion_iterations=config.inversion_iterations)
            sampler = replace(planned_sampler, steps=config.steps, seeds=config.seeds)
            evaluations[0] = windows[0] = 0
            start = time.perf_counter()
            with torch.no_grad(), network.sampling(sampler, seed=base, strengths=config.strengths):
                maps = {case: predictor.predict_sliding_window_return_logits(data).float().numpy()
                        for case, (data, _) in cases.items()}
            seconds = time.perf_counter() - start
            labels = {case: lesion for case, (_, lesion) in cases.items()}
            erosion, _ = choose_erosion([maps[c] for c in tuning], [labels[c] for c in tuning])
            chosen = {c: m[erosion] for c, m in maps.items()}
            threshold, tuning_dice = best_dice_threshold([chosen[c] for c in tuning], [labels[c] for c in tuning])
            minimum = planned.min_component_voxels
            lesion_scores = score_cases({c: chosen[c] for c in test}, {c: labels[c] for c in test}, threshold, minimum)
            scored = [*test, *held_out]
            all_scores = score_cases({c: chosen[c] for c in scored}, {c: labels[c] for c in scored}, threshold, minimum)
            healthy_pixels = sum(labels[c].size for c in held_out)
            flagged = (sum(all_scores["cases"][c]["flagged_voxels"] for c in held_out) / healthy_pixels
                       if held_out else None)
            row = {"config": config.name, "base_seed": base, "evaluations_per_window": evaluations[0] / windows[0],
                   "erosion": erosion, "threshold": threshold, "tuning_dice": tuning_dice,
                   "pixel_auprc": lesion_scores["pixel_auprc"], "pixel_auprc_with_healthy": all_scores["pixel_auprc"],
                   "dice": all_scores["dice_at_threshold"], "healthy_pixels_flagged": flagged, "seconds": seconds}
            rows.append(row)
            print(f"| {config.name} | {base} | {row['evaluations_per_window']:.0f} | {erosion} | "
                  f"{row['pixel_auprc']:.3f} | {row['pixel_auprc_with_healthy']:.3f} | {row['dice']:.3f} | "
                  f"{_share(flagged)} | {seconds:.0f} |", flush=True)

        atomic_write_json(partial, {"dataset": raw.name, "rows": rows})  # kept if the run stops early
    prevalence = float(np.mean(np.concatenate([cases[c][1].ravel() for c in test])))
    summary = {}
    for config in configs:
        mine = [r for r in rows if r["config"] == config.name]
        summary[config.name] = {key: None if mine[0][key] is None else float(np.mean([r[key] for r in mine]))
                                for key in ("evaluations_per_window", "pixel_auprc", "pixel_auprc_with_healthy", "dice",
                                            "healthy_pixels_flagged")}
        summary[config.name]["pixel_auprc_sd"] = float(np.std([r["pixel_auprc"] for r in mine]))
    best = max(summary.values(), key=lambda s: s["pixel_auprc"])["pixel_auprc"]
    enough = [n for n in summary if all(r["pixel_auprc"] >= (1 - args.within) * best
                                        for r in rows if r["config"] == n)]
    cheapest = min(enough, key=lambda n: summary[n]["evaluations_per_window"])
    frontier = {n for n, s in summary.items()
                if not any(o["evaluations_per_window"] <= s["evaluations_per_window"]
                           and o["pixel_auprc"] > s["pixel_auprc"] for m, o in summary.items() if m != n)}
    print(f"\nmean over base seeds {args.base_seeds}; lesion prevalence of the test-family cases {prevalence:.4f}")
    print("| config | evaluations per window | pixel AUPRC (lesion cases) | sd over base seeds | with healthy cases | "
          "Dice | healthy pixels flagged | |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, s in sorted(summary.items(), key=lambda item: item[1]["evaluations_per_window"]):
        marks = ", ".join(m for m, on in (("frontier", name in frontier),
                                          (f"cheapest within {args.within:.0%} of the best", name == cheapest)) if on)
        print(f"| {name} | {s['evaluations_per_window']:.0f} | {s['pixel_auprc']:.3f} | {s['pixel_auprc_sd']:.3f} | "
              f"{s['pixel_auprc_with_healthy']:.3f} | {s['dice']:.3f} | {_share(s['healthy_pixels_flagged'])} | "
              f"{marks} |")
    atomic_write_json(output, {"dataset": raw.name, "prevalence": prevalence, "base_seeds": args.base_seeds,
                               "within": args.within, "cheapest_within": cheapest, "frontier": sorted(frontier),
                               "rows": rows, "summary": summary, "load_average": list(os.getloadavg())})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
