"""Does nnugen work where users train? One command, on one GPU in under ten minutes, or on N GPUs under torchrun.

    python benchmarks/gpu_check.py --work-dir /tmp/gpu_check [--gpus N] [--device cuda] [--tasks seg,ddpm,...]

On two small phantom datasets written here (a 3D phantom, and healthy phantoms with synthetic lesions for the anomaly
task), through the real CLIs, it checks:

- one short training per task (seg, ddpm, autoencoder, ldm, anomaly) with nnU-Net's default compile on a GPU
  (``nnUNet_compile=t``), and the segmentation once more without it (``nnUNet_compile=f``); the latent model and
  the latent sampling read the autoencoder trained under compile;
- ``--c`` after a ``kill -9`` in the middle of a segmentation training, and ``--val`` of a finished one (the RNG
  state of the checkpoint restored on the training device);
- prediction (``nnUNetv2_predict`` and ``nnugen_predict`` with two seeds and uncertainty) and sampling
  (``nnugen_sample`` from the DDPM and the latent model), anomaly maps (``nnugen_predict -tr NnugenAnomalyTrainer``);
- per training: the time per iteration (nnU-Net's epoch time over its iterations) and the peak GPU memory the trainer
  logs next to the plan's estimate;
- host syncs per sampler step of the trained segmenter (``torch.cuda.set_sync_debug_mode``): syncs counted over a run
  of S and of 2S steps, the difference over S.

With ``--gpus N`` every training runs as ``torchrun --nproc_per_node N nnugen_train ...`` (DDP with NCCL). It prints
one line per check, writes ``gpu_check.json`` to the work folder and exits 1 if any check failed. ``--device cpu``
runs the same checks on the CPU (slowly: a check of the script itself; compile is then forced with the eager
backend through ``NNUGEN_COMPILE``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

BIN = Path(sys.executable).parent
PHANTOM, PHANTOM_NAME = 971, "GpuCheckPhantom"
LESIONS, LESIONS_NAME = 972, "GpuCheckLesions"
TASKS = ("seg", "ddpm", "autoencoder", "ldm", "anomaly")
SECTIONS = {"seg": "segmentation", "ddpm": "ddpm", "autoencoder": "autoencoder", "ldm": "ldm", "anomaly": "anomaly"}
TRAINERS = {"seg": "NnugenDiffSegTrainer", "ddpm": "NnugenDDPMTrainer", "autoencoder": "NnugenAutoencoderTrainer",
            "ldm": "NnugenLDMTrainer", "anomaly": "NnugenAnomalyTrainer"}
EPOCHS, ITERATIONS = 2, 10


class Check:
    """The checks' results, printed as they come and saved at the end."""

    def __init__(self, work: Path) -> None:
        self.work, self.results = work, []

    def run(self, name: str, function, *args) -> object:
        start = time.monotonic()
        try:
            details = function(*args) or {}
            passed, error = True, ""
        except Exception as failure:  # noqa: BLE001 - every failure is reported, then the next check runs
            details, passed, error = {}, False, (str(failure).strip().splitlines() or [type(failure).__name__])[-1]
        seconds = round(time.monotonic() - start, 1)
        self.results.append({"check": name, "passed": passed, "seconds": seconds, **details, "error": error})
        shown = ", ".join(f"{key} {value}" for key, value in details.items())
        print(f"{'PASS' if passed else 'FAIL'} {name} ({seconds} s){': ' + shown if shown else ''}"
              f"{' -- ' + error if error else ''}", flush=True)
        return details if passed else None

    def save(self) -> bool:
        (self.work / "gpu_check.json").write_text(json.dumps(self.results, indent=2) + "\n")
        failed = [r["check"] for r in self.results if not r["passed"]]
        print(f"{len(self.results) - len(failed)} passed, {len(failed)} failed" +
              (f": {', '.join(failed)}" if failed else ""), flush=True)
        return not failed


class Runner:
    """The CLIs of this environment, in the work folder's nnUNet_* folders."""

    def __init__(self, work: Path, device: str, gpus: int) -> None:
        self.work, self.device, self.gpus = work, device, gpus
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
        self.env.update(nnUNet_raw=str(work / "raw"), nnUNet_preprocessed=str(work / "preprocessed"),
                        nnUNet_results=str(work / "results"), nnUNet_def_n_proc=str(min(8, os.cpu_count() or 2)),
                        nnUNet_n_proc_DA=str(min(8, os.cpu_count() or 2)))
        if device == "cpu":  # nnU-Net never compiles on the CPU: force nnugen's policy with the eager backend
            self.env.update(NNUGEN_COMPILE="1", NNUGEN_COMPILE_BACKEND="eager")
        self.log = work / "gpu_check_commands.log"

    def command(self, name: str, *args: str, env: dict | None = None, wait: bool = True):
        command = [str(BIN / name), *args]
        with open(self.log, "a", encoding="utf-8") as stream:
            stream.write(f"\n$ {' '.join(command)}\n")
        environment = {**self.env, **(env or {})}
        if not wait:
            return subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
        with open(self.log, "a", encoding="utf-8") as stream:
            result = subprocess.run(command, env=environment, stdout=stream, stderr=subprocess.STDOUT)
        if result.returncode != 0:
            raise RuntimeError(f"{name} exited {result.returncode}; see {self.log}")
        return None

    def train_arguments(self, dataset: int, fold: str, task: str, *flags: str) -> list[str]:
        arguments = [str(dataset), fold, "3d", "--task", task, "-device", self.device, "--seed", "0", *flags]
        if self.gpus > 1:
            return ["--standalone", f"--nproc_per_node={self.gpus}", str(BIN / "nnugen_train"), *arguments]
        return arguments

    def train(self, dataset: int, fold: str, task: str, *flags: str, env: dict | None = None, wait: bool = True):
        launcher = "torchrun" if self.gpus > 1 else "nnugen_train"
        return self.command(launcher, *self.train_arguments(dataset, fold, task, *flags), env=env, wait=wait)

    def fold(self, dataset: int, name: str, task: str, fold: str) -> Path:
        return self.work / "results" / f"Dataset{dataset}_{name}" / f"{TRAINERS[task]}__nnugenPlans__3d_fullres" / \
            f"fold_{fold}"


def short_training(task: str) -> list[str]:
    section = SECTIONS[task]
    settings = [f"{section}.training.epochs={EPOCHS}", f"{section}.training.iterations_per_epoch={ITERATIONS}",
                f"{section}.training.val_iterations_per_epoch=2", f"{section}.training.save_every=1"]
    if task in ("ddpm", "ldm"):
        settings.append(f"{section}.sampler.steps=10")
    if task == "anomaly":
        settings += ["anomaly.sampler.steps=8", "anomaly.sampler.seeds=2"]
    return [a for s in settings for a in ("--set", s)]


def prepare(runner: Runner, size: int) -> dict:
    from nnugen.atomic_files import atomic_write_json
    from nnugen.demo.lesion_dataset import write_lesion_dataset
    from nnugen.demo.phantom import PhantomSpec, write_phantom_dataset

    spec = PhantomSpec(shape=(size,) * 3)
    raw = runner.work / "raw"
    write_phantom_dataset(raw, PHANTOM, PHANTOM_NAME, 8, 2, spec, seed=0, overwrite=True)
    lesions = write_lesion_dataset(raw, LESIONS, LESIONS_NAME, 8, 2, 2, seed=0, spec=spec, overwrite=True)
    settings = [a for task in TASKS for a in short_training(task)]
    for dataset in (PHANTOM, LESIONS):
        runner.command("nnUNetv2_plan_and_preprocess", "-d", str(dataset), "-c", "3d_fullres", "-np", "4",
                       "-npfp", "4")
        runner.command("nnugen_plan", "-d", str(dataset), "-c", "3d_fullres", "--overwrite", *settings)
    # as the anomaly demo: fold 0 trains on every healthy case and chooses its threshold on the lesion cases
    described = json.loads((lesions / "dataset.json").read_text())["nnugen_lesions"]
    validation = sorted(case for case in described["lesion_families"] if (lesions / "labelsTr" / f"{case}.nii.gz")
                        .is_file())
    atomic_write_json(runner.work / "preprocessed" / lesions.name / "splits_final.json",
                      [{"train": described["healthy_cases"], "val": validation}])
    return {"voxels": f"{size}^3"}


def training_numbers(fold: Path) -> dict:
    """Seconds per iteration (the last epoch's time over its iterations, validation included) and the peak memory
    line the trainer logged, from the training log."""
    text = "\n".join(log.read_text() for log in sorted(fold.glob("training_log_*.txt")))
    epochs = [float(value) for value in re.findall(r"Epoch time: ([0-9.]+) s", text)]
    peak = re.findall(r"peak GPU memory ([0-9.]+) GB allocated by tensors; the plan estimated ([0-9.]+) GB", text)
    numbers = {"s_per_iteration": round(epochs[-1] / ITERATIONS, 3) if epochs else None}
    if peak:
        numbers.update(peak_gb=float(peak[-1][0]), estimated_gb=float(peak[-1][1]))
    if not (fold / "checkpoint_final.pth").is_file():
        raise RuntimeError(f"no checkpoint_final.pth in {fold}")
    return numbers


def train_task(runner: Runner, dataset: int, name: str, task: str, fold: str = "0", compile_: str = "t") -> dict:
    env = {"nnUNet_compile": compile_}
    if compile_ == "f":
        env["NNUGEN_COMPILE"] = "0"  # on the CPU the runner forces compile with NNUGEN_COMPILE=1
    runner.train(dataset, fold, task, env=env)
    return training_numbers(runner.fold(dataset, name, task, fold))


def kill_and_continue(runner: Runner) -> dict:
    """Kill -9 a segmentation training once its first epoch is announced, then --c to the end."""
    fold = runner.fold(PHANTOM, PHANTOM_NAME, "seg", "1")
    process = runner.train(PHANTOM, "1", "seg", wait=False)
    start = time.monotonic()
    while process.poll() is None and time.monotonic() - start < 600:
        if any("Epoch time" in log.read_text() for log in fold.glob("training_log_*.txt")):
            break
        time.sleep(0.2)
    if process.poll() is not None:
        raise RuntimeError("the training ended before it could be killed; raise EPOCHS")
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = time.monotonic() - start
    runner.train(PHANTOM, "1", "seg", "--c")
    import torch

    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    if checkpoint["current_epoch"] != EPOCHS:
        raise RuntimeError(f"resumed run ended at epoch {checkpoint['current_epoch']}, not {EPOCHS}")
    return {"killed_after_s": round(killed_at, 1)}


def predict_and_sample(runner: Runner) -> dict:
    images = str(runner.work / "raw" / f"Dataset{PHANTOM}_{PHANTOM_NAME}" / "imagesTs")
    common = ["-d", str(PHANTOM), "-c", "3d_fullres", "-f", "0", "-p", "nnugenPlans", "-i", images, "-device",
              runner.device]
    runner.command("nnUNetv2_predict", *common, "-tr", TRAINERS["seg"], "-o", str(runner.work / "pred_nnunet"))
    runner.command("nnugen_predict", *common, "-tr", TRAINERS["seg"], "-o", str(runner.work / "pred_nnugen"),
                   "--ensemble-size", "2", "--save-uncertainty")
    written = len(list((runner.work / "pred_nnugen").glob("*_entropy.nii.gz")))
    if written != 2:
        raise RuntimeError(f"nnugen_predict wrote {written} entropy images for 2 cases")
    return {"cases": written}


def sample(runner: Runner, task: str) -> dict:
    out = runner.work / f"samples_{task}"
    runner.command("nnugen_sample", str(PHANTOM), "3d", "2", str(out), "--task", task, "-device", runner.device,
                   "--seed", "0", "--overwrite")
    return {"previews": len(list((out / "previews").glob("*")))}


def anomaly_maps(runner: Runner) -> dict:
    images = str(runner.work / "raw" / f"Dataset{LESIONS}_{LESIONS_NAME}" / "imagesTs")
    runner.train(LESIONS, "0", "anomaly", "--val")
    runner.command("nnugen_predict", "-d", str(LESIONS), "-c", "3d_fullres", "-f", "0", "-p", "nnugenPlans", "-tr",
                   TRAINERS["anomaly"], "-i", images, "-o", str(runner.work / "anomaly_maps"), "-device",
                   runner.device)
    maps = len(list((runner.work / "anomaly_maps").glob("*_anomaly.nii.gz")))
    if maps != 2:
        raise RuntimeError(f"nnugen_predict wrote {maps} anomaly maps for 2 cases")
    return {"maps": maps}


def host_syncs_per_step(runner: Runner) -> dict:
    """Synchronising CUDA calls per sampler step of the trained segmenter, on one patch-sized tile."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    if runner.device != "cuda":
        return {"syncs_per_step": "n/a (CUDA only)"}
    os.environ.update(runner.env)
    from nnugen.run.ext_trainer_path import ensure_ext_trainer_path

    ensure_ext_trainer_path()
    predictor = nnUNetPredictor(device=torch.device("cuda"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(runner.fold(PHANTOM, PHANTOM_NAME, "seg", "0").parent),
                                                   [0], "checkpoint_final.pth")
    network = predictor.network.to("cuda").eval()
    network = getattr(network, "_orig_mod", network)
    tile = torch.randn(1, 1, *predictor.configuration_manager.patch_size, device="cuda")

    def syncs(steps: int) -> int:
        sampler = replace(network.planned_sampler, name="ddim", steps=steps, seeds=1)
        with network.sampling(sampler), torch.inference_mode(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                network(tile)
                torch.cuda.synchronize()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    few, many = syncs(2), syncs(4)
    per_step = (many - few) / 2
    if per_step >= 1:
        raise RuntimeError(f"{per_step:g} host syncs per sampler step (2 steps: {few}, 4 steps: {many})")
    return {"syncs_per_step": per_step, "syncs_2_steps": few, "syncs_4_steps": many}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("gpu_check"))
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--gpus", type=int, default=1, help="trainings under torchrun --nproc_per_node N (DDP)")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"a subset of {','.join(TASKS)}")
    parser.add_argument("--size", type=int, default=48, help="voxels along each axis of the phantoms")
    args = parser.parse_args(argv)
    tasks = [task for task in args.tasks.split(",") if task]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
    if "ldm" in tasks and "autoencoder" not in tasks:
        parser.error("ldm needs the autoencoder: add it to --tasks")
    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    runner, check = Runner(work, args.device, args.gpus), Check(work)
    if check.run("prepare datasets, nnUNetv2_plan_and_preprocess, nnugen_plan", prepare, runner,
                 args.size) is None:
        return 0 if check.save() else 1
    if "seg" in tasks:
        check.run("train seg (compiled)", train_task, runner, PHANTOM, PHANTOM_NAME, "seg", "0", "t")
        check.run("train seg (not compiled)", train_task, runner, PHANTOM, PHANTOM_NAME, "seg", "2", "f")
        check.run("kill -9 mid-training, then --c", kill_and_continue, runner)
        check.run("--val of a finished seg training", runner.train, PHANTOM, "0", "seg", "--val")
        check.run("nnUNetv2_predict and nnugen_predict", predict_and_sample, runner)
        check.run("host syncs per sampler step", host_syncs_per_step, runner)
    if "ddpm" in tasks:
        check.run("train ddpm (compiled)", train_task, runner, PHANTOM, PHANTOM_NAME, "ddpm")
        check.run("nnugen_sample (ddpm)", sample, runner, "ddpm")
    if "autoencoder" in tasks:
        check.run("train autoencoder (compiled)", train_task, runner, PHANTOM, PHANTOM_NAME, "autoencoder")
    if "ldm" in tasks:
        check.run("train ldm on the compiled autoencoder", train_task, runner, PHANTOM, PHANTOM_NAME, "ldm")
        check.run("nnugen_sample (ldm)", sample, runner, "ldm")
    if "anomaly" in tasks:
        check.run("train anomaly (compiled)", train_task, runner, LESIONS, LESIONS_NAME, "anomaly")
        check.run("anomaly --val and nnugen_predict maps", anomaly_maps, runner)
    return 0 if check.save() else 1


if __name__ == "__main__":
    sys.exit(main())
