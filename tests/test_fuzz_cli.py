"""Property-based fuzzing of the CLIs' arguments (issue 15): hypothesis draws argv for nnugen_predict, nnugen_sample,
nnugen_train and nnugen_plan -- flags with wrong types, negative and huge numbers, missing values, unknown task names
and samplers, odd paths (the input folder, the model folder, ``..``, a file, a missing parent) -- and calls
``main(argv)`` in-process. Every call must end with exit code 0, 1 or 2, print no traceback, say a non-zero exit in
one line ``PROG: error: ...`` (argparse's usage errors: its usage block, then that line), and write nothing into the
folders it must not touch (preprocessed data, model folders, inputs, the working folder); a refused call writes
nothing at all.

No trained model: the models here are model folders with real plans (nnugen_plan's, of the fake preprocessed
dataset) and a placeholder checkpoint; where a run would start (nnugen_predict / nnugen_sample loading the weights,
nnugen_train starting nnU-Net's run) a stub ends it with exit code 0. So the checks every argv passes through are the
real ones, each example takes milliseconds, and the argv that pass all checks count as "0". The real runs on trained
models, faults included, are benchmarks/fault_table.py's."""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
NUMBERS = st.sampled_from(["0", "1", "2", "5", "-1", "-7", "0.5", "3.5", "nan", "inf", "-inf", "1e400",
                           "99999999999999999999", "x", "", "0x10", "1_000", " 3"])
NAMES = st.sampled_from(["ddim", "ddpm", "dpm_solver++", "euler", "", "DDIM", "seg", "ddpm", "anomaly", "nosuchtask",
                         "../x", "cpu", "cuda", "mps", "tpu", "uniform", "trailing", "log-snr", "x"])
PATHS = st.sampled_from(["OUT", "OUT", "OUT/deep/er", "IN", "IN/sub", "MODEL", "MODEL/preds", ".", "", "..",
                         "FILE", "FILE/x", "/nonexistent_nnugen/x", "OUT/../IN", "a b", "-x", "OUT\nnewline"])


EXAMPLES = itertools.count()


class Reached(SystemExit):
    """Raised by the stubs where a real run would start: every check passed (exit code 0)."""

    def __init__(self) -> None:
        super().__init__(0)


def _stub(*args, **kwargs):
    raise Reached()


def _digest(root: Path) -> dict[str, str]:
    """Every file and folder under ``root``: its content hash, or "dir"."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def world(tmp_path_factory, preprocessed_dataset_writer):
    """A fake preprocessed dataset 901 planned by nnugen_plan, a diffusion-segmentation and a DDPM model folder with
    its plans and a placeholder checkpoint, an input folder of one case and a plain file; nnUNet_* pointing there,
    the working folder an empty one, and the runs stubbed where they would load weights or start training."""
    root = tmp_path_factory.mktemp("fuzz_cli")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("nnUNet_preprocessed", str(root / "pre"))
        patch.setenv("nnUNet_results", str(root / "results"))
        patch.delenv("nnUNet_raw", raising=False)
        (root / "pre").mkdir()
        dataset = preprocessed_dataset_writer(root / "pre", "isotropic", 901, "Fake")
        from nnugen_planner.planner import PlanRequest, plan_dataset

        plans = plan_dataset(PlanRequest(dataset="901"))
        for trainer in ("NnugenDiffSegTrainer", "NnugenDDPMTrainer"):
            model = root / "results" / "Dataset901_Fake" / f"{trainer}__nnugenPlans__3d_fullres"
            (model / "fold_0").mkdir(parents=True)
            shutil.copy(plans, model / "plans.json")
            shutil.copy(dataset / "dataset.json", model / "dataset.json")
            (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"placeholder")
        (root / "IN").mkdir()
        image = sitk.GetImageFromArray(np.zeros((6, 7, 8), dtype=np.float32))
        sitk.WriteImage(image, str(root / "IN" / "a_0000.nii.gz"))
        (root / "FILE").write_text("a plain file\n")
        (root / "cwd").mkdir()
        patch.chdir(root / "cwd")
        import nnugen.inference.model_loading as model_loading
        import nnugen.inference.sample_api as sample_api
        import nnugen.run.train_api as train_api

        patch.setattr(model_loading, "load_diffusion_predictor", _stub)
        patch.setattr(sample_api, "load_generator", _stub)
        patch.setattr(train_api, "ensure_ext_trainer_path", _stub)
        yield root


def _resolve(argv: list[str], root: Path, example: Path) -> list[str]:
    """Placeholders to paths: OUT (new, per example), IN, MODEL, FILE."""
    places = {"OUT": str(example / "out"), "IN": str(root / "IN"), "FILE": str(root / "FILE"),
              "MODEL": str(root / "results" / "Dataset901_Fake" / "NnugenDiffSegTrainer__nnugenPlans__3d_fullres")}
    resolved = []
    for arg in argv:
        for name, path in places.items():
            if arg == name or arg.startswith(name + "/"):
                arg = path + arg[len(name):]
        resolved.append(arg)
    return resolved


def _flags(options: dict) -> st.SearchStrategy:
    """A list of flags of ``options`` (flag -> value strategy, None for a switch), some with their value left out."""
    def one(flag):
        if options[flag] is None:
            return st.just([flag])
        return st.one_of(options[flag].map(lambda v: [flag, v]), st.just([flag]))  # value left out
    return st.lists(st.sampled_from(sorted(options)).flatmap(one), max_size=4).map(lambda ls: sum(ls, []))


PREDICT = {"-i": PATHS, "-o": PATHS, "-m": PATHS, "-d": st.sampled_from(["901", "Dataset901_Fake", "999", "x"]),
           "-f": st.sampled_from(["0", "all", "1", "-1", "x", "0.5"]), "-chk": st.sampled_from(
               ["checkpoint_final.pth", "missing.pth", "../x.pth", ""]), "-step_size": NUMBERS, "--steps": NUMBERS,
           "--ensemble-size": NUMBERS, "--eta": NUMBERS, "--sampler": NAMES, "--spacing": NAMES, "--seed": NUMBERS,
           "-npp": NUMBERS, "-nps": NUMBERS, "-num_parts": NUMBERS, "-part_id": NUMBERS, "-device": NAMES,
           "--strengths": NUMBERS, "--threshold-file": PATHS, "-prev_stage_predictions": PATHS, "-tr": NAMES,
           "-c": st.sampled_from(["3d_fullres", "3d", "2d", "x"]), "--save-uncertainty": None, "--continue": None,
           "--disable_tta": None, "--skip-input-check": None, "--save_probabilities": None}
SAMPLE = {"--task": NAMES, "--spacing": NAMES, "-f": st.sampled_from(["0", "all", "1", "x"]), "-chk": st.sampled_from(
              ["checkpoint_final.pth", "missing.pth"]), "--sampler": NAMES, "--steps": NUMBERS, "--eta": NUMBERS,
          "--guidance-scale": NUMBERS, "--seed": NUMBERS, "--size": st.sampled_from(["whole", "patch", "x"]),
          "--labels-from": PATHS, "--as-dataset": st.sampled_from(["Dataset950_Synth", "Dataset9_X", "../x", "x"]),
          "-num_parts": NUMBERS, "-part_id": NUMBERS, "-device": NAMES, "--overwrite": None, "--continue": None}
TRAIN = {"--task": NAMES, "-device": NAMES, "-num_gpus": NUMBERS, "--seed": NUMBERS, "-p": st.sampled_from(
             ["nnugenPlans", "nnUNetPlans", "missing", "../x"]), "-pretrained_weights": PATHS, "--c": None,
         "--val": None, "--npz": None}
PLAN = {"-c": st.sampled_from(["2d", "3d", "3d_fullres", "3d_lowres", "4d", ""]), "--gpu-memory-gb": NUMBERS,
        "--set": st.sampled_from(["ddpm.sampler.steps=3", "ddpm.sampler.steps=x", "ddpm.sampler.eta=2", "=", "ddpm",
                                  "segmentation.training.initial_lr=.nan", "nosuch.key=1"]),
        "--overrides": PATHS, "-p": st.sampled_from(["nnUNetPlans", "missing", "../x"]), "-np": NUMBERS,
        "--overwrite": None}

CLIS = {
    "nnugen_predict": (st.tuples(st.just(["-i", "IN", "-o", "OUT", "-m", "MODEL", "-device", "cpu", "-f", "0",
                                          "-npp", "0", "-nps", "0"]), _flags(PREDICT))),
    "nnugen_sample": st.tuples(st.tuples(st.sampled_from(["901", "Dataset901_Fake", "999", "x", "../901"]),
                                         st.sampled_from(["3d", "3d_fullres", "2d", "x"]), NUMBERS, PATHS)
                               .map(lambda t: [*t, "-device", "cpu"]), _flags(SAMPLE)),
    "nnugen_train": st.tuples(st.tuples(st.sampled_from(["901", "Dataset901_Fake", "999", "x"]),
                                        st.sampled_from(["0", "all", "5", "-1", "x"]),
                                        st.sampled_from(["3d", "3d_fullres", "2d", "3d_lowres", "x"]))
                              .map(lambda t: [*t, "-device", "cpu"]), _flags(TRAIN)),
    "nnugen_plan": st.tuples(st.sampled_from([["-d", "901", "--no-check"], ["-d", "999", "--no-check"], ["-d", "x"],
                                              ["-d", "901", "--no-check", "-c", "3d_fullres"]]), _flags(PLAN)),
}


def _main(prog: str):
    from importlib import import_module

    return import_module(f"nnugen.entrypoints.{prog.removeprefix('nnugen_')}").main


def _one_line(prog: str, code: int, stderr: str) -> None:
    # a deprecated spelling (``-p`` without a value) is said once, before whatever follows
    lines = [line for line in stderr.strip().splitlines() if not line.startswith(f"{prog}: -p without a value is "
                                                                                  "deprecated")]
    if code == 0:
        return
    assert lines and lines[-1].startswith(f"{prog}: error: "), stderr
    if len(lines) > 1:  # argparse: "usage: ..." and its continuation lines, then the error line; exit code 2
        assert code == 2 and lines[0].startswith("usage: ") and all(
            line.startswith(" ") for line in lines[1:-1]), stderr


@pytest.mark.parametrize("prog", list(CLIS))
@FUZZ
@given(data=st.data())
def test_fuzzed_argv_exits_0_1_or_2_in_one_line_and_writes_only_where_it_may(world, prog, data):
    base, flags = data.draw(CLIS[prog])
    example = world / "examples" / f"{prog}_{next(EXAMPLES)}"
    example.mkdir(parents=True)
    argv = _resolve([*base, *flags], world, example)
    plans = world / "pre" / "Dataset901_Fake" / "nnugenPlans.json"
    planned = plans.read_bytes()
    before = {k: v for k, v in _digest(world).items() if not k.startswith("examples")}
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = _main(prog)(argv)
        except SystemExit as exit_:  # argparse's usage errors (2), --help (0), the stubs (0)
            code = exit_.code
    text = stderr.getvalue()
    assert code in (0, 1, 2), (argv, code, text)
    assert "Traceback" not in text, (argv, text)
    _one_line(prog, code, text)
    after = {k: v for k, v in _digest(world).items() if not k.startswith("examples")}
    if prog == "nnugen_plan" and code == 0:  # a plan that went through writes nnugenPlans.json, nothing else
        before.pop("pre/Dataset901_Fake/nnugenPlans.json")
        after.pop("pre/Dataset901_Fake/nnugenPlans.json")
        plans.write_bytes(planned)  # the next examples start from the same plans
    assert after == before, (argv, sorted(set(after.items()) ^ set(before.items())))
    assert not any(example.iterdir()), (argv, [str(p) for p in example.rglob("*")])  # checks write nothing
    event(f"exit {code}")
