"""Kill -9 at random moments of a short nnugen_train run, then ``nnugen_train --c``: does every run finish, and how
many finished epochs are lost?

A small 2D phantom dataset is prepared once. Each trial copies it, starts a diffusion segmentation run (EPOCHS
epochs of a few iterations, the latest checkpoint written every epoch), and kills the whole process group with
SIGKILL:

- ``random`` trials at a moment drawn uniformly over the run's expected length (measured on an uninterrupted run);
- ``during write`` trials the instant the temporary file (``.checkpoint_*.tmp``) of the k-th checkpoint write
  appears (k drawn at random), that is, in the middle of an atomic checkpoint write. A trial counts as killed
  mid-write when that temporary file is still there after the kill (a small checkpoint can be renamed before the
  kill lands).

Before the kill, the finished epochs are counted from nnU-Net's training log ("Epoch time" lines): what a user
reads as finished. nnugen's trainers write the epoch's checkpoints before printing that line (nnU-Net prints
first). After the kill, ``--c`` must resume and end with ``checkpoint_final.pth`` holding EPOCHS epochs of losses,
and no temporary file may remain. Lost epochs = finished before the kill - the epoch stored in the checkpoint
``--c`` resumes from (nnU-Net's order: final, latest, best).

    python benchmarks/kill_resume_benchmark.py --work-dir /tmp/killbench [--trials 20] [--seed 0] [--parallel 3]

``--parallel`` runs trials side by side (each in its own folder); ``--length`` skips the uninterrupted reference
run and uses the given run length in seconds instead.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from nnugen.demo.phantom import PhantomSpec, write_phantom_dataset

BIN = Path(sys.executable).parent
DATASET, NAME, EPOCHS = 983, "KillPhantom", 5
FOLD = f"results/Dataset{DATASET}_{NAME}/NnugenDiffSegTrainer__nnugenPlans__2d/fold_0"


def environment(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_")}
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
               nnUNet_results=str(root / "results"), nnUNet_def_n_proc="2", nnUNet_n_proc_DA="1")
    return env


def run(command: list[str], env: dict[str, str]) -> None:
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def prepare(template: Path) -> None:
    if (template / "preprocessed" / f"Dataset{DATASET}_{NAME}" / "nnugenPlans.json").is_file():
        return
    env = environment(template)
    write_phantom_dataset(template / "raw", DATASET, NAME, 6, 1, PhantomSpec(shape=(64, 64)), seed=0)
    run([str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", str(DATASET), "-c", "2d", "-np", "2", "-npfp", "2"], env)
    run([str(BIN / "nnugen_plan"), "-d", str(DATASET), "-c", "2d", "--set", f"segmentation.training.epochs={EPOCHS}",
         "--set", "segmentation.training.iterations_per_epoch=4", "--set",
         "segmentation.training.val_iterations_per_epoch=1", "--set", "segmentation.training.save_every=1",
         "--set", "segmentation.sampler.steps=5"], env)


def train_command() -> list[str]:
    return [str(BIN / "nnugen_train"), str(DATASET), "0", "2d", "-device", "cpu", "--seed", "0"]


def finished_epochs(fold: Path) -> int:
    logs = sorted(fold.glob("training_log_*.txt"))
    return sum(line.count("Epoch time") for log in logs for line in log.read_text().splitlines())


def resume_epoch(fold: Path) -> int:
    """The epoch stored in the checkpoint ``--c`` picks (0: none, -1: it does not load)."""
    for name in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth"):
        if (fold / name).is_file():
            try:
                return torch.load(fold / name, map_location="cpu", weights_only=False)["current_epoch"]
            except Exception:  # noqa: BLE001 - a torn checkpoint is exactly what this benchmark looks for
                return -1
    return 0


def trial(template: Path, root: Path, kind: str, kill_after: float, kill_at_write: int, timeout: float) -> dict:
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(template, root)
    env, fold = environment(root), root / FOLD
    process = subprocess.Popen(train_command(), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    start, writes = time.monotonic(), set()
    while process.poll() is None and time.monotonic() - start < timeout:
        if kind == "random" and time.monotonic() - start >= kill_after:
            break
        if kind == "during write" and fold.is_dir():
            writes.update(path.name for path in fold.glob(".checkpoint_*.tmp"))
            if len(writes) >= kill_at_write:
                break
        time.sleep(0.005)
    killed_at = time.monotonic() - start
    finished_before = finished_epochs(fold) if fold.is_dir() else 0
    if process.poll() is not None:
        return {"kind": kind, "killed_at_s": round(killed_at, 2), "killed": False, "resumed_and_finished": True,
                "finished_before_kill": finished_before, "lost_epochs": 0}
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    torn = sorted(path.name for path in fold.glob(".checkpoint_*.tmp")) if fold.is_dir() else []
    resumed_from = resume_epoch(fold) if fold.is_dir() else 0
    result = subprocess.run([*train_command(), "--c"], env=env, capture_output=True, text=True)
    final = fold / "checkpoint_final.pth"
    complete = False
    if result.returncode == 0 and final.is_file():
        checkpoint = torch.load(final, map_location="cpu", weights_only=False)
        complete = checkpoint["current_epoch"] == EPOCHS and len(checkpoint["logging"]["train_losses"]) == EPOCHS
    left = sorted(path.name for path in fold.glob(".checkpoint_*.tmp"))
    return {"kind": kind, "killed_at_s": round(killed_at, 2), "killed": True, "killed_mid_write": bool(torn),
            "temporaries_left_after_resume": left, "resumed_and_finished": complete and not left,
            "finished_before_kill": finished_before, "resumed_from_epoch": resumed_from,
            "lost_epochs": max(0, finished_before - max(resumed_from, 0)),
            "error": "" if complete else (result.stderr.strip().splitlines() or ["?"])[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--parallel", type=int, default=1, help="trials run side by side")
    parser.add_argument("--length", type=float, default=None, help="run length in s (skips the reference run)")
    args = parser.parse_args()
    work = args.work_dir.resolve()
    template = work / "template"
    prepare(template)

    length = args.length
    if length is None:
        reference = work / "reference"
        shutil.rmtree(reference, ignore_errors=True)
        shutil.copytree(template, reference)
        start = time.monotonic()
        run(train_command(), environment(reference))
        length = time.monotonic() - start
        print(f"an uninterrupted run takes {length:.0f} s", flush=True)

    rng = random.Random(args.seed)
    plan = [("during write" if index % 3 == 2 else "random", rng.uniform(0.05, 0.95) * length,
             rng.randint(1, EPOCHS)) for index in range(args.trials)]
    done = []

    def one(index: int) -> dict:
        kind, kill_after, kill_at_write = plan[index]
        outcome = {"trial": index, **trial(template, work / f"trial_{index}", kind, kill_after, kill_at_write,
                                           timeout=3 * length)}
        done.append(outcome)
        print(json.dumps(outcome), flush=True)
        (work / "kill_resume_trials.json").write_text(json.dumps(sorted(done, key=lambda r: r["trial"]),
                                                                 indent=2))
        shutil.rmtree(work / f"trial_{index}", ignore_errors=True)
        return outcome

    with ThreadPoolExecutor(args.parallel) as pool:
        results = list(pool.map(one, range(args.trials)))
    killed = [r for r in results if r["killed"]]
    summary = {"trials": len(results), "killed": len(killed),
               "aimed_at_a_write": sum(r["kind"] == "during write" for r in killed),
               "killed_mid_write": sum(r["killed_mid_write"] for r in killed),
               "resumed_and_finished": sum(r["resumed_and_finished"] for r in killed),
               "finished_epochs_lost": sum(r["lost_epochs"] for r in killed), "uninterrupted_run_s": round(length, 1)}
    (work / "kill_resume_benchmark.json").write_text(json.dumps({"summary": summary, "trials": results}, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
