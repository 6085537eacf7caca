"""Faults that lose or corrupt data (issue 15), run for real against the CLIs, as a Markdown table.

Uses the small trained 2D phantom models of ``bad_input_table.py`` (same work folder; it prepares them if needed).
Every fault is run, not mocked: a full disk is a tmpfs mounted as the output folder with room for the run's JSON
files only (so the first image gets ENOSPC; mounting needs root), an interrupted run is a ``kill -9``. For each row:
the exit code, the number of stderr lines (and the last one), whether a Python traceback was printed, and the data
lost or corrupted: input files changed, files that do not read back (0-byte or unreadable images under their final
names), foreign files overwritten, temporary files left behind.

    python benchmarks/fault_table.py --work-dir /tmp/badinput [--output faults.md]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk
from bad_input_table import DATASET, NAME, _copy_case, _nan_voxel, _truncate, cli, environment, prepare


@dataclass
class Fault:
    what: str
    command: list[str]
    damage: Callable[[], list[str]]
    """Run after the command: what was lost or corrupted (empty: nothing)."""
    setup: Callable[[], object] | None = None
    kill_after: Callable[[], bool] | None = None
    """``kill -9`` the command as soon as this returns True."""
    records: dict = field(default_factory=dict)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _unreadable(folder: Path) -> list[str]:
    """Images under final names that do not read back (0 bytes, cut off, unreadable)."""
    bad = []
    for path in sorted(folder.rglob("*.nii.gz")):
        if path.name.startswith("."):
            continue
        try:
            sitk.ReadImage(str(path))
        except RuntimeError:
            bad.append(f"{path.name} unreadable ({path.stat().st_size} bytes)")
    return bad


MARKERS = (".nnugen_sampling_run.json",)
"""Dot files nnugen writes on purpose (nnugen_sample's run marker in an --as-dataset folder)."""


def _temporaries(folder: Path) -> list[str]:
    return [f"temporary {p.name} left" for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in MARKERS
            and (p.name.startswith(".") or ".tmp" in p.name or p.name.endswith("~"))]


def _unchanged(folder: Path, before: dict[str, str], what: str) -> list[str]:
    after = _digest(folder) if folder.exists() else {}
    changed = [name for name in before if after.get(name) != before[name]]
    return [f"{what} {name} changed or removed" for name in changed]


def _input_folder(root: Path, name: str, cases: dict[str, Callable[[Path], None] | None]) -> Path:
    """A folder of one-channel cases copied from the held-out images, each damaged by its function (or not)."""
    folder = root / "faults" / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    source = next((root / "raw" / f"Dataset{DATASET}_{NAME}" / "imagesTs").glob("*_0000.nii.gz"))
    for case, damage in cases.items():
        target = folder / f"{case}_0000.nii.gz"
        shutil.copy(source, target)
        if damage is not None:
            damage(target)
    return folder


def faults(root: Path) -> list[Fault]:
    d = str(DATASET)
    predict = [cli("nnugen_predict"), "-d", d, "-c", "2d", "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0"]
    sample = [cli("nnugen_sample"), d, "2d"]
    work = root / "faults"
    rows: list[Fault] = []

    full, kept = work / "full_disk_out", work / "full_disk_kept"
    probe = [*predict, "-i", str(work / "full_disk_in"), "-o", str(work / "full_disk_probe")]
    full_disk = [Fault("nnugen_predict, output disk full (a tmpfs with room for the run's JSON files only)",
                       [*predict, "-i", str(work / "full_disk_in"), "-o", str(full)],
                       lambda: _unmount_keeping(full, kept),
                       setup=lambda: (_input_folder(root, "full_disk_in", {"p": None}),
                                      _small_disk(full, probe, environment(root)))),
                 Fault("nnugen_predict --continue_prediction on what the full disk left",
                       [*predict, "-i", str(work / "full_disk_in"), "-o", str(kept), "--continue_prediction"],
                       lambda: _unreadable(kept) + _temporaries(kept)
                       + ([] if (kept / "p.nii.gz").is_file() else ["p.nii.gz never written"]))]

    same = work / "same_folder"
    state: dict[str, dict[str, str]] = {}
    # case P_0000's segmentation would be P_0000.nii.gz, which is case P's image
    rows.append(Fault("nnugen_predict -i X -o X (cases P and P_0000)", [*predict, "-i", str(same), "-o", str(same)],
                      lambda: _unchanged(same, state["same"], "input"),
                      setup=lambda: state.update(same=_digest(_input_folder(root, "same_folder",
                                                                            {"P": None, "P_0000": None})))))

    clash = work / "clash_in"
    clash_out = work / "clash_out"
    rows.append(Fault("nnugen_predict --save-uncertainty, cases a and a_entropy",
                      [*predict, "-i", str(clash), "-o", str(clash_out), "--save-uncertainty"],
                      lambda: ["a_entropy.nii.gz is both a case and a's entropy map"]
                      if (clash_out / "a_entropy.nii.gz").is_file() and (clash_out / "a.nii.gz").is_file() else [],
                      setup=lambda: (_input_folder(root, "clash_in", {"a": None, "a_entropy": None}),
                                     shutil.rmtree(clash_out, ignore_errors=True))))

    rows += full_disk

    broken = work / "broken_in"
    broken_out = work / "broken_out"
    rows.append(Fault("nnugen_predict, a truncated .nii.gz and a NaN image in -i",
                      [*predict, "-i", str(broken), "-o", str(broken_out)],
                      lambda: [f"{p.name} predicted from a broken image" for p in sorted(broken_out.glob("*.nii.gz"))],
                      setup=lambda: (_input_folder(root, "broken_in", {"cut": _truncate, "nan": _nan_voxel}),
                                     shutil.rmtree(broken_out, ignore_errors=True))))

    parts = work / "parts_out"
    rows.append(Fault("nnugen_sample -num_parts 2 -part_id 0 into a folder with someone's files",
                      [*sample, "2", str(parts), "-num_parts", "2", "-part_id", "0", "-device", "cpu"],
                      lambda: _unchanged(parts, state["parts"], "foreign file") + _added(parts, state["parts"]),
                      setup=lambda: state.update(parts=_foreign_folder(parts))))

    foreign, foreign_out = f"Dataset{DATASET + 10}_Foreign", work / "as_dataset_out"
    parts_of = [[*sample, "2", str(foreign_out), "--as-dataset", foreign, "-num_parts", "2", "-part_id", str(k),
                 "-device", "cpu"] for k in (0, 1)]
    rows.append(Fault("nnugen_sample --as-dataset onto an existing dataset, parts 0 and 1 one after the other",
                      ["bash", "-c", " && ".join(shlex.join(part) for part in parts_of)],
                      lambda: _unchanged(foreign_out / foreign, state["foreign"], "foreign dataset file"),
                      setup=lambda: state.update(foreign=_foreign_dataset(foreign_out / foreign))))

    killed, killed_out = f"Dataset{DATASET + 11}_Killed", work / "killed_out"
    rows.append(Fault("nnugen_sample --as-dataset killed (kill -9) while writing",
                      [*sample, "4", str(killed_out), "--as-dataset", killed, "-device", "cpu"],
                      lambda: [], setup=lambda: _clear(killed_out),
                      kill_after=lambda: any((killed_out / killed).rglob("*.nii.gz"))))
    rows.append(Fault("nnugen_sample --continue after the kill, then nnU-Net's dataset check",
                      [*sample, "4", str(killed_out), "--as-dataset", killed, "-device", "cpu", "--continue"],
                      lambda: _temporaries(killed_out) + _nnunet_verify(root, killed_out / killed)))

    plans = root / "preprocessed" / f"Dataset{DATASET}_{NAME}" / "nnugenPlans.json"
    backup = work / "nnugenPlans.json.kept"

    def keep_plans() -> None:
        work.mkdir(parents=True, exist_ok=True)
        shutil.copy2(plans, backup)
        state.update(plans=_digest(plans.parent))

    def plans_damage() -> list[str]:
        found = _unchanged(plans.parent, state["plans"], "planned file") + _nonstandard(plans)
        shutil.copy2(backup, plans)  # the next rows need the trained models' plans
        return found

    for setting in ("segmentation.training.initial_lr=.nan", "segmentation.sampler.eta=.NaN",
                    "anomaly.anomaly.target_fpr=.nan", "segmentation.memory.budget_gb=.inf"):
        rows.append(Fault(f"nnugen_plan --set {setting}", [cli("nnugen_plan"), "-d", d, "-c", "2d", "--set", setting],
                          plans_damage, setup=keep_plans))
    rows.append(Fault("nnugen_plan --gpu-memory-gb inf", [cli("nnugen_plan"), "-d", d, "-c", "2d", "--gpu-memory-gb",
                                                          "inf"], plans_damage, setup=keep_plans))

    model = root / "results" / f"Dataset{DATASET}_{NAME}" / "NnugenDDPMTrainer__nnugenPlans__2d"
    rows.append(Fault("nnugen_train --val on a fold never trained",
                      [cli("nnugen_train"), d, "3", "2d", "--task", "ddpm", "-device", "cpu", "--val"],
                      lambda: ["empty fold_3 left behind"] if (model / "fold_3").exists() else []))
    rows.append(Fault("nnugen_sample --continue with a sampling.json of the wrong type",
                      [*sample, "2", str(work / "bad_json_out"), "--continue", "-device", "cpu"],
                      lambda: [], setup=lambda: _bad_sampling_json(work / "bad_json_out")))
    return rows + _read_only_faults(root, predict, sample) + _kill_faults(root, predict) + _file_faults(root, predict,
                                                                                                         sample)


def _read_only_faults(root: Path, predict: list[str], sample: list[str]) -> list[Fault]:
    """An output folder on a read-only file system (a tmpfs mounted ``ro``: root ignores file permissions)."""
    work, read_only = root / "faults", root / "faults" / "read_only_out"
    inputs = work / "read_only_in"
    return [Fault("nnugen_predict -o on a read-only file system (tmpfs mounted ro)",
                  [*predict, "-i", str(inputs), "-o", str(read_only)], lambda: _unmount_read_only(read_only),
                  setup=lambda: (_input_folder(root, "read_only_in", {"p": None}), _mount_read_only(read_only))),
            Fault("nnugen_sample into a read-only file system (tmpfs mounted ro)",
                  [*sample, "1", str(read_only), "-device", "cpu"], lambda: _unmount_read_only(read_only),
                  setup=lambda: _mount_read_only(read_only))]


KILL_TRIALS = 3
KILL_SEED = 15


def _kill_faults(root: Path, predict: list[str]) -> list[Fault]:
    """``kill -9`` of nnugen_predict at random points (seeded fractions of an uninterrupted run's time), each followed
    by ``--continue_prediction``, whose files must equal the uninterrupted run's (names, voxels, geometry)."""
    work = root / "faults"
    inputs, reference = work / "kill_in", work / "kill_reference"
    clock: dict[str, float] = {}

    def reference_setup() -> None:
        _input_folder(root, "kill_in", {"k1": None, "k2": None, "k3": None})
        _clear(reference)
        clock["start"] = time.monotonic()

    def reference_damage() -> list[str]:
        clock["reference_s"] = time.monotonic() - clock["start"]
        return _unreadable(reference) + _temporaries(reference)

    rows = [Fault("nnugen_predict, 3 cases, uninterrupted (the reference of the kill trials)",
                  [*predict, "-i", str(inputs), "-o", str(reference)], reference_damage, setup=reference_setup)]
    fractions = [random.Random(KILL_SEED + k).uniform(0.1, 0.9) for k in range(KILL_TRIALS)]
    for k, fraction in enumerate(fractions):
        out = work / f"kill_out_{k}"

        def start(out=out) -> None:
            _clear(out)
            clock["killed_start"] = time.monotonic()

        def due(fraction=fraction) -> bool:
            return time.monotonic() - clock["killed_start"] > fraction * clock["reference_s"]

        rows.append(Fault(f"nnugen_predict killed (kill -9) at {fraction:.0%} of the reference run's time",
                          [*predict, "-i", str(inputs), "-o", str(out)], lambda out=out: _unreadable(out),
                          setup=start, kill_after=due))
        rows.append(Fault("... then --continue_prediction: the same files as the uninterrupted run?",
                          [*predict, "-i", str(inputs), "-o", str(out), "--continue_prediction"],
                          lambda out=out: _unreadable(out) + _temporaries(out) + _differences(out, reference)))
    return rows


def _file_faults(root: Path, predict: list[str], sample: list[str]) -> list[Fault]:
    """A file size limit (EFBIG, as a full disk), a missing checkpoint, and a model folder whose plans or checkpoint
    were damaged (on a copy of the trained model, ``-m``)."""
    work = root / "faults"
    efbig, one_in, out = work / "efbig_out", work / "files_in", work / "files_out"
    model = root / "results" / f"Dataset{DATASET}_{NAME}" / "NnugenDiffSegTrainer__nnugenPlans__2d"
    copy = work / "damaged_model"
    state: dict[str, dict[str, str]] = {}
    by_folder = [cli("nnugen_predict"), "-m", str(copy), "-f", "0", "-device", "cpu", "-npp", "0", "-nps", "0",
                 "-i", str(one_in), "-o", str(out)]

    def damaged(change: Callable[[Path], None]) -> Callable[[], None]:
        def setup() -> None:
            _input_folder(root, "files_in", {"p": None})
            _clear(copy, out)
            shutil.copytree(model, copy)
            change(copy)
            state["copy"] = _digest(copy)
        return setup

    def untouched() -> list[str]:
        return _unchanged(copy, state["copy"], "model file") + (["output folder created"] if out.exists() else [])

    # 3 kB: sampling.json (1.8 kB) and a label map (1.1 kB) fit, the first image (3.8 kB, 64 x 64) does not
    limited = ["bash", "-c", f"ulimit -f 3 && exec {shlex.join([*sample, '2', str(efbig), '-device', 'cpu'])}"]
    return [Fault("nnugen_sample under a 3 kB file size limit (EFBIG, ulimit -f)", limited,
                  lambda: _unreadable(efbig) + _temporaries(efbig), setup=lambda: _clear(efbig)),
            Fault("... then nnugen_sample --continue without the limit",
                  [*sample, "2", str(efbig), "--continue", "-device", "cpu"],
                  lambda: _unreadable(efbig) + _temporaries(efbig)
                  + [f"case_000{k}_0000.nii.gz never written" for k in (0, 1)
                     if not (efbig / f"case_000{k}_0000.nii.gz").is_file()]),
            Fault("nnugen_predict -chk naming a checkpoint that is not there",
                  [*predict, "-i", str(one_in), "-o", str(out), "-chk", "checkpoint_missing.pth"],
                  lambda: ["output folder created"] if out.exists() else [],
                  setup=lambda: (_input_folder(root, "files_in", {"p": None}), _clear(out))),
            Fault("nnugen_predict -m, plans.json without the model's configuration", by_folder, untouched,
                  setup=damaged(lambda m: _edit_json(m / "plans.json", lambda p: p["configurations"].pop("2d")))),
            Fault("nnugen_predict -m, checkpoint_final.pth cut to half", by_folder, untouched,
                  setup=damaged(lambda m: _truncate(m / "fold_0" / "checkpoint_final.pth"))),
            Fault("nnugen_predict -m, plans.json with NaN in the nnugen section (sampler.eta)", by_folder, untouched,
                  setup=damaged(lambda m: _edit_json(m / "plans.json", lambda p: p["configurations"]["2d"]["nnugen"][
                      "tasks"]["segmentation"]["sampler"].update(eta=float("nan"))))),
            Fault("nnugen_predict -m, plans.json cut to half", by_folder, untouched,
                  setup=damaged(lambda m: _truncate(m / "plans.json")))]


def _edit_json(path: Path, change: Callable[[dict], object]) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))  # NaN written as NaN, as a hand edit through json.dumps would


def _differences(folder: Path, reference: Path) -> list[str]:
    """Images of ``reference`` missing from ``folder`` or differing in voxels or geometry, and extra images."""
    names = {p.name for p in reference.glob("*.nii.gz")}
    found = {p.name for p in folder.glob("*.nii.gz") if not p.name.startswith(".")}
    problems = [f"{name} missing" for name in sorted(names - found)]
    problems += [f"{name} not in the uninterrupted run" for name in sorted(found - names)]
    for name in sorted(names & found):
        try:
            a, b = sitk.ReadImage(str(folder / name)), sitk.ReadImage(str(reference / name))
        except RuntimeError:
            continue  # counted by _unreadable
        same = (sitk.GetArrayFromImage(a) == sitk.GetArrayFromImage(b)).all() and a.GetSpacing() == b.GetSpacing() \
            and a.GetOrigin() == b.GetOrigin() and a.GetDirection() == b.GetDirection()
        if not same:
            problems.append(f"{name} differs from the uninterrupted run")
    return problems


def _mount_read_only(folder: Path) -> None:
    _unmount(folder)
    _clear(folder)
    folder.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], check=True)


def _unmount_read_only(folder: Path) -> list[str]:
    written = [f"{p.name} written" for p in sorted(folder.rglob("*"))]  # cannot be: the file system refuses
    _unmount(folder)
    return written


def _small_disk(folder: Path, probe: list[str], env: dict[str, str]) -> None:
    """A tmpfs at ``folder`` exactly as large as the JSON files of the same prediction (``probe``, run first into a
    folder of its own) take in whole 4 kB pages: the run files of nnugen_predict fit, the first image does not
    (ENOSPC). Needs root."""
    _unmount(folder)
    _clear(folder)
    folder.mkdir(parents=True)
    like = Path(probe[probe.index("-o") + 1])
    _clear(like)
    subprocess.run(probe, env=env, capture_output=True, check=True)
    size = sum(-(-p.stat().st_size // 4096) * 4096 for p in like.glob("*.json"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)


def _unmount(folder: Path) -> None:
    subprocess.run(["umount", str(folder)], capture_output=True)


def _unmount_keeping(folder: Path, kept: Path) -> list[str]:
    """What the full disk left, judged, then copied to ``kept`` (for --continue) and the tmpfs removed."""
    damage = _unreadable(folder) + _temporaries(folder)
    _clear(kept)
    shutil.copytree(folder, kept)
    _unmount(folder)
    return damage


def _clear(*folders: Path) -> None:
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)


def _foreign_folder(folder: Path) -> dict[str, str]:
    """Someone's folder: a file named like part 1's first case (part 0 would not write it) and notes."""
    _clear(folder)
    folder.mkdir(parents=True)
    (folder / "case_0001_0000.nii.gz").write_bytes(b"someone else's file")
    (folder / "notes.txt").write_text("keep me")
    return _digest(folder)


def _added(folder: Path, before: dict[str, str]) -> list[str]:
    added = sorted(set(_digest(folder)) - set(before))
    return [f"{len(added)} file(s) written among someone's files"] if added else []


def _foreign_dataset(folder: Path) -> dict[str, str]:
    _clear(folder.parent)
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"name": "someone else's", "numTraining": 0}))
    return _digest(folder)


def _bad_sampling_json(folder: Path) -> None:
    _clear(folder)
    folder.mkdir(parents=True)
    (folder / "sampling.json").write_text(json.dumps({"seed": "zero", "cases": 7}))


def _nonstandard(path: Path) -> list[str]:
    text = path.read_text() if path.is_file() else ""
    return [f"{path.name} holds NaN / Infinity (not standard JSON)"] if "NaN" in text or "Infinity" in text else []


def _nnunet_verify(root: Path, dataset: Path) -> list[str]:
    """nnU-Net's own ``verify_dataset_integrity`` on a dataset nnugen_sample wrote (as nnUNetv2_plan_and_preprocess
    --verify_dataset_integrity runs it)."""
    if not (dataset / "dataset.json").is_file():
        return ["no dataset.json"]
    code = ("import sys\nfrom nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity\n"
            "verify_dataset_integrity(sys.argv[1], num_processes=1)\n")
    result = subprocess.run([str(Path(cli("python"))), "-c", code, str(dataset)], env=environment(root),
                            capture_output=True, text=True)
    last = (result.stderr.strip().splitlines() or ["?"])[-1][:120]
    return [] if result.returncode == 0 else [f"nnU-Net's verify_dataset_integrity fails: {last}"]


def run_fault(fault: Fault, env: dict[str, str]) -> dict:
    if fault.setup is not None:
        fault.setup()

    process = subprocess.Popen(fault.command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = False
    if fault.kill_after is not None:
        while process.poll() is None and not fault.kill_after():
            time.sleep(0.05)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed = True
    stdout, stderr = process.communicate()
    lines = stderr.strip().splitlines()
    return {"fault": fault.what, "exit": "killed" if killed else process.returncode, "stderr_lines": len(lines),
            "message": lines[-1] if lines else "", "traceback": "Traceback (most recent call last)" in stderr,
            "damage": fault.damage()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--only", action="append", default=None, metavar="TEXT",
                        help="run only the faults whose description contains TEXT (repeatable; for trying rows out)")
    args = parser.parse_args()
    root = args.work_dir.resolve()
    prepare(root)
    _copy_case(root, "one_case")
    env = environment(root)
    rows = ["| fault | exit | stderr (last line) | traceback | data lost or corrupted |", "|---|---|---|---|---|"]
    records = []
    for fault in faults(root):
        if args.only and not any(text in fault.what for text in args.only):
            continue
        record = run_fault(fault, env)
        records.append(record)
        message = record["message"].replace("|", "/")[:160] or "(nothing)"
        lines = "" if record["stderr_lines"] <= 1 else f" ({record['stderr_lines']} lines)"
        damage = "; ".join(record["damage"]) or "none"
        rows.append(f"| {fault.what} | {record['exit']} | {message}{lines} | {'yes' if record['traceback'] else 'no'} "
                    f"| {damage} |")
        print(rows[-1], flush=True)
    (root / "fault_table.json").write_text(json.dumps(records, indent=2))
    table = "\n".join(rows)
    if args.output is not None:
        args.output.write_text(table + "\n")
    print("\n" + table)


if __name__ == "__main__":
    main()
