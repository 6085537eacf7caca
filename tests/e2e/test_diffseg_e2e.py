"""Diffusion segmentation end to end through the real CLIs, with nnUNet_extTrainer unset in the environment:
nnugen_plan -> nnugen_train (2D and 3D, session fixtures in conftest.py) -> nnUNetv2_predict -tr NnugenDiffSegTrainer
-p nnugenPlans, and nnugen_predict with its sampler flags, seeds, uncertainty maps, parts, copied model folders and
one-line errors. The trained models are tiny (see conftest.py); what is tested is that training moves the model far
from its initialisation and that every file lands where, and as, it should."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from dice import mean_foreground_dice
from e2e_helpers import cli, finish, nnunet_environment, run, run_all, start, succeeded

pytestmark = pytest.mark.slow

UNCERTAINTY_FLAGS = ["--save-uncertainty", "--ensemble-size", "2", "--steps", "2", "--sampler", "ddim"]
FAST = ["-device", "cpu", "-npp", "0", "-nps", "0", "--disable_progress_bar"]
DICE_MARGIN = 0.25
"""Trained minus untrained mean foreground Dice must exceed this. Observed with conftest.py's runs: 3D (40 iterations,
5 trainings) 0.39 - 0.43 against 0.023 untrained; 2D (20 iterations, 8 trainings) 0.42 - 0.45 against 0.023 - 0.029.
The organ reaches a Dice of 0.8 - 0.9; the small lesion is not learned yet, which caps the mean near 0.45."""


def dataset_paths(model_folder: Path) -> tuple[Path, Path, Path]:
    """(root of the nnU-Net folders, imagesTs, labelsTs) of a trained model's dataset."""
    root = model_folder.parents[2]
    raw = root / "raw" / model_folder.parent.name
    return root, raw / "imagesTs", raw / "labelsTs"


def predict_untrained(model_folder: Path, images: Path, output: Path) -> None:
    """Segment ``images`` with the network as training starts it (0 iterations), through nnU-Net's predictor with
    the model folder's plans, in this process (a second nnUNetv2_predict would only add its start-up)."""
    import json

    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnugen.trainers.nnugen_diffseg_trainer import NnugenDiffSegTrainer

    plans = PlansManager(json.loads((model_folder / "plans.json").read_text()))
    dataset_json = json.loads((model_folder / "dataset.json").read_text())
    configuration = plans.get_configuration(model_folder.name.split("__")[-1])
    torch.manual_seed(0)
    network = NnugenDiffSegTrainer.build_network_architecture(
        plans, configuration, determine_num_input_channels(plans, configuration, dataset_json),
        plans.get_label_manager(dataset_json).num_segmentation_heads, False)
    predictor = nnUNetPredictor(device=torch.device("cpu"), use_mirroring=False, allow_tqdm=False)
    predictor.manual_initialization(network, plans, configuration, [network.state_dict()], dataset_json,
                                    "NnugenDiffSegTrainer", None)
    output.mkdir(parents=True)
    predictor.predict_from_files_sequential(str(images), str(output), save_probabilities=False, overwrite=True)


def array(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def geometry(path: Path) -> tuple:
    image = sitk.ReadImage(str(path))
    return image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()


def case_files(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.glob("*.nii.gz"))}


def assert_same_outputs(folder: Path, reference: Path, names: list[str] | None = None) -> None:
    """Same file names; segmentations byte-identical as arrays, uncertainty maps identical arrays."""
    expected = case_files(reference)
    names = sorted(expected) if names is None else names
    assert sorted(case_files(folder)) == sorted(names)
    for name in names:
        ours, theirs = array(folder / name), array(expected[name])
        assert ours.dtype == theirs.dtype, name
        assert ours.tobytes() == theirs.tobytes(), f"{name} differs"


@pytest.mark.parametrize("trained", ["trained_diffseg3d", "trained_diffseg2d"])
def test_nnunet_predict_of_a_trained_model_beats_its_initialisation(trained, request):
    model_folder: Path = request.getfixturevalue(trained)
    root, images, labels = dataset_paths(model_folder)
    env = nnunet_environment(root)
    assert "nnUNet_extTrainer" not in env
    dataset, configuration = model_folder.parent.name, model_folder.name.split("__")[-1]
    predict = [cli("nnUNetv2_predict"), "-d", dataset, "-c", configuration, "-f", "0", "-tr", "NnugenDiffSegTrainer",
               "-p", "nnugenPlans", "-i", str(images), "-device", "cpu", "-npp", "0", "-nps", "0",
               "--disable_progress_bar"]
    trained_run = start([*predict, "-o", str(root / "pred_trained")], env)
    try:
        predict_untrained(model_folder, images, root / "pred_untrained")  # meanwhile
    finally:
        completed = finish(trained_run)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    trained_dice = mean_foreground_dice(root / "pred_trained", labels)
    untrained_dice = mean_foreground_dice(root / "pred_untrained", labels)
    print(f"{trained}: mean foreground Dice {trained_dice:.3f} trained vs {untrained_dice:.3f} untrained")
    assert trained_dice > untrained_dice + DICE_MARGIN
    # after the last epoch: a preview image | reference | prediction | entropy (a GIF too in 3D), the run's progress
    # file finished, and the log keeps nnU-Net's pseudo Dice (a real Dice here)
    from nnugen.trainers.training_progress import read_training_progress

    fold = model_folder / "fold_0"
    previews = sorted(p.suffix for p in (fold / "previews").iterdir())
    assert previews == ([".gif", ".png"] if configuration == "3d_fullres" else [".png"]), previews
    progress = read_training_progress(fold)
    assert progress.finished and progress.steps_done == progress.steps_total
    assert "Pseudo dice" in next(fold.glob("training_log_*.txt")).read_text()


def test_nnugen_predict_writes_uncertainty_maps_in_the_geometry_of_each_image(trained_diffseg3d, tmp_path):
    root, images, _ = dataset_paths(trained_diffseg3d)
    output = tmp_path / "out"
    run([cli("nnugen_predict"), "-d", "901", "-c", "3d", "-i", str(images), "-o", str(output), *FAST,
         *UNCERTAINTY_FLAGS], nnunet_environment(root))
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in images.glob("*_0000.nii.gz"))
    assert len(cases) == 2
    for case in cases:
        expected = geometry(images / f"{case}_0000.nii.gz")
        segmentation = output / f"{case}.nii.gz"
        entropy, variance = output / f"{case}_entropy.nii.gz", output / f"{case}_variance.nii.gz"
        for path in (segmentation, entropy, variance):
            assert geometry(path) == expected, path.name
        assert set(np.unique(array(segmentation))) <= {0, 1, 2}
        # (whether members differ is a unit test's job: a confident model's members can agree to the last bit)
        for path, high in ((entropy, math.log(3)), (variance, 0.25)):
            values = array(path)
            assert values.dtype == np.float32 and np.isfinite(values).all()
            assert values.min() >= 0.0 and values.max() <= high + 1e-5, path.name
    assert not list(output.glob(".*")), "a temporary file was left behind"


def test_nnugen_predict_is_repeatable_across_parts_resumes_and_copied_model_folders(trained_diffseg2d, tmp_path):
    root, images, _ = dataset_paths(trained_diffseg2d)
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in images.glob("*_0000.nii.gz"))
    outputs = {case: [f"{case}{suffix}.nii.gz" for suffix in ("", "_entropy", "_variance")] for case in cases}
    predict = [cli("nnugen_predict"), "-i", str(images), *FAST, *UNCERTAINTY_FLAGS, "--seed", "3"]

    # one run with a model folder copied elsewhere, nnUNet_results pointing nowhere
    copied = tmp_path / "elsewhere" / "my_model"
    shutil.copytree(trained_diffseg2d, copied)
    single = tmp_path / "single"
    run([*predict, "-m", str(copied), "-o", str(single)],
        nnunet_environment(root, nnUNet_results=str(tmp_path / "no_results")))
    assert sorted(case_files(single)) == sorted(name for names in outputs.values() for name in names)

    # the same seed again, split in two parts that run at the same time into a folder where an interrupted run left
    # the first case: part 0 (the first case) finds it complete and leaves it alone, part 1 predicts the second case,
    # which must come out as in the single run although it is now the first (and only) case of its run
    parts = tmp_path / "parts"
    parts.mkdir()
    for name in outputs[cases[0]]:
        shutil.copy2(single / name, parts / name)
    torn = parts / f".{cases[1]}.nii.gz.12345678.tmp.nii.gz"  # a killed run's temporary (old name, an hour old)
    torn.write_bytes(b"")
    os.utime(torn, (0, 0))
    before = {name: (parts / name).stat().st_mtime_ns for name in outputs[cases[0]]}
    results = run_all([([*predict, "-d", "902", "-c", "2d", "-o", str(parts), "-num_parts", "2", "-part_id", str(k),
                         "--continue_prediction"], nnunet_environment(root)) for k in (0, 1)])
    assert "0 case(s) to predict" in results[0].stdout and "1 case(s) to predict" in results[1].stdout
    assert not torn.exists()  # removed at the start, by whichever part came first
    assert {name: (parts / name).stat().st_mtime_ns for name in outputs[cases[0]]} == before
    assert_same_outputs(parts, single)


BAD_INPUTS = {
    "zero steps": (["--steps", "0"], "--steps 0: must be at least 1"),
    "zero ensemble size": (["--ensemble-size", "0"], "--ensemble-size 0: must be at least 1"),
    "more steps than trained timesteps": (["--steps", "6"], "--steps 6: this model was trained with 5 timesteps"),
    "unknown sampler": (["--sampler", "euler"], "unknown sampler 'euler'"),
    "two channels for a one-channel model": ([], "has 2 channel file(s) (_0000, _0001) but the model expects 1"),
    "a baseline model folder": ([], "was trained with NnugenBaselineTrainer, not a diffusion segmentation trainer; "
                                    "use nnUNetv2_predict"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_exits_with_one_line_and_writes_nothing(case, trained_diffseg2d, tmp_path, request):
    root, images, _ = dataset_paths(trained_diffseg2d)
    flags, message = BAD_INPUTS[case]
    model = ["-m", str(trained_diffseg2d)]
    if case.startswith("two channels"):
        from nnugen.demo.phantom import PhantomSpec, write_phantom_dataset

        spec = PhantomSpec(shape=(16, 16), spacing=(1.0, 1.0), n_channels=2)
        images = write_phantom_dataset(tmp_path / "raw", 903, "TwoChannels", n_train=1, n_test=1, spec=spec) / \
            "imagesTs"
    if case.startswith("a baseline"):
        model = ["-m", str(request.getfixturevalue("trained_baseline2d"))]
    output = tmp_path / "out"
    result = subprocess.run([cli("nnugen_predict"), *model, "-i", str(images), "-o", str(output), *FAST, *flags],
                            env=nnunet_environment(root), capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnugen_predict: error: "), result.stderr
    assert message in lines[0]
    assert not output.exists()


class BackgroundTraining:
    """A training CLI run started now and awaited later, so that it overlaps with the tests before it (most of a
    short nnU-Net run is single-threaded start-up, which leaves a core idle)."""

    def __init__(self, command: list[str], env: dict[str, str], model_folder: Path):
        self.process, self.model_folder = start(command, env), model_folder

    def result(self) -> Path:
        succeeded(finish(self.process))
        assert (self.model_folder / "fold_0" / "checkpoint_final.pth").is_file()
        return self.model_folder

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


@pytest.fixture(scope="module", autouse=True)
def baseline_training(tiny2d, tmp_path_factory):
    """NnugenBaselineTrainer (nnU-Net's own network) on a copy of dataset 902, 1 epoch of 1 iteration, started when
    this module starts and awaited by ``trained_baseline2d``."""
    root = tmp_path_factory.mktemp("baseline2d")
    shutil.copytree(tiny2d, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("results"))
    env = nnunet_environment(root)
    run([cli("nnugen_plan"), "-d", "902", "--set", "baseline.training.epochs=1",
         "--set", "baseline.training.iterations_per_epoch=1", "--set", "baseline.training.val_iterations_per_epoch=1"],
        env)
    training = BackgroundTraining(
        [cli("nnugen_train"), "902", "0", "2d", "--task", "baseline", "-device", "cpu", "--seed", "0"], env,
        root / "results" / "Dataset902_Tiny2D" / "NnugenBaselineTrainer__nnugenPlans__2d")
    yield training
    training.stop()


@pytest.fixture(scope="module")
def trained_baseline2d(baseline_training) -> Path:
    """Model folder of the baseline training."""
    return baseline_training.result()
