"""The flags as an nnU-Net user reads them: ``-p PLANS`` is the plans identifier in every command, nnugen's own flags
are ``--long-dashed`` (``--progress``, ``--ensemble-size``), and the old spellings (a bare ``-p``, ``--seeds``,
``-plans_name``, nnugen_demo's ``--device``) still work for one release with one line on stderr. The commands are run
through their ``main(argv)`` with the work behind them stubbed, so only the parsing is tested."""

from __future__ import annotations

import os

import pytest

from nnugen import PLANS_IDENTIFIER
from nnugen.run_flags import PROGRESS_VARIABLE, SEED_VARIABLE

OLD_P = ("-p without a value is deprecated, use --progress (-p PLANS is the plans identifier, as in nnU-Net; from the "
         "next release it needs the value)")


@pytest.fixture
def train_requests(monkeypatch):
    """Runs ``nnugen_train`` with ``train`` stubbed; returns the requests it was given."""
    from nnugen.run import train_api

    requests = []
    monkeypatch.setattr(train_api, "train", requests.append)
    return requests


@pytest.fixture
def sample_requests(monkeypatch):
    from nnugen.inference import sample_api

    requests = []
    monkeypatch.setattr(sample_api, "sample", lambda request: requests.append(request) or [])
    return requests


@pytest.fixture
def predict_requests(monkeypatch):
    from nnugen.inference import predict_api

    requests = []
    monkeypatch.setattr(predict_api, "predict", lambda request: requests.append(request) or [])
    return requests


def _train(argv: list[str]) -> int:
    from nnugen.entrypoints.train import main

    return main(argv)


def _sample(argv: list[str]) -> int:
    from nnugen.entrypoints.sample import main

    return main(["901", "3d", "2", "out", *argv])


def _predict(argv: list[str]) -> int:
    from nnugen.entrypoints.predict import main

    return main(["-i", "in", "-o", "out", "-d", "901", "-c", "3d", *argv])


# --- nnugen_train --------------------------------------------------------------------------------------------------


def test_train_positionals_and_plans(train_requests, capsys):
    assert _train(["4", "1", "3d_lowres", "-p", "nnugenPlansBig", "-device", "cpu"]) == 0
    (request,) = train_requests
    assert (request.dataset, request.fold, request.configuration) == ("4", "1", "3d_lowres")
    assert request.plans == "nnugenPlansBig" and request.progress is None and request.device == "cpu"
    assert capsys.readouterr().err == ""


def test_train_defaults_to_nnugen_plans_without_progress(train_requests, capsys):
    assert _train(["4", "0", "3d"]) == 0
    assert train_requests[0].plans == PLANS_IDENTIFIER == "nnugenPlans"
    assert train_requests[0].progress is None  # neither flag: a bar when stdout is a terminal
    assert capsys.readouterr().err == ""
    assert _train(["4", "0", "3d", "--no-progress"]) == 0
    assert train_requests[1].progress is False


def test_train_progress(train_requests, capsys):
    assert _train(["4", "0", "3d", "--progress", "-p", "otherPlans"]) == 0
    assert train_requests[0].progress is True and train_requests[0].plans == "otherPlans"
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("argv", [["4", "0", "3d", "-p"], ["4", "0", "3d", "-p", "-device", "cpu"],
                                  ["4", "0", "3d", "-p", "--c"]])
def test_train_bare_p_still_means_progress_with_one_note(train_requests, capsys, argv):
    assert _train(argv) == 0
    assert train_requests[0].progress is True and train_requests[0].plans == PLANS_IDENTIFIER
    assert capsys.readouterr().err.splitlines() == [f"nnugen_train: {OLD_P}"]


def test_train_plans_reach_nnunets_run_and_the_plans_check(monkeypatch, fake_preprocessed):
    """``TrainRequest.plans`` is the plans file checked and the identifier nnU-Net's run_training gets."""
    from nnunetv2.run import run_training as nnunet_run

    from nnugen.run import train_api

    fake_preprocessed("isotropic")
    request = train_api.TrainRequest(dataset="901", fold="0", configuration="3d", device="cpu", plans="myPlans")
    with pytest.raises(ValueError, match=r"Dataset901_Fake/myPlans\.json is missing; check -p myPlans "
                                         r"\(nnugen_plan writes nnugenPlans\.json\)"):
        train_api.check_request(request)

    calls = []
    monkeypatch.setattr(train_api, "check_request", lambda request: ("3d_fullres", "NnugenDiffSegTrainer"))
    monkeypatch.setattr(train_api, "ensure_ext_trainer_path", lambda: None)
    monkeypatch.setattr(nnunet_run, "run_training", lambda *args, **kwargs: calls.append(args))
    monkeypatch.setenv(PROGRESS_VARIABLE, "0")
    monkeypatch.setenv(SEED_VARIABLE, "")
    train_api.train(train_api.TrainRequest(dataset="901", fold="0", configuration="3d", device="mps",
                                           plans="myPlans", progress=True))
    assert calls == [("901", "3d_fullres", "0", "NnugenDiffSegTrainer", "myPlans")]
    assert os.environ[PROGRESS_VARIABLE] == "1"


def test_train_pretrained_weights_flag(train_requests):
    assert _train(["4", "0", "3d", "-pretrained_weights", "nnunet/checkpoint_final.pth"]) == 0
    assert train_requests[0].pretrained_weights == "nnunet/checkpoint_final.pth"


def test_train_pretrained_weights_reach_the_trainer_as_an_absolute_path(monkeypatch, tmp_path):
    """``-pretrained_weights`` travels to the trainer through run_flags' variable, resolved against this directory;
    a run without it clears what an earlier run of the process set."""
    from nnunetv2.run import run_training as nnunet_run

    from nnugen.run import train_api
    from nnugen.run_flags import PRETRAINED_VARIABLE, RunFlags

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train_api, "check_request", lambda request: ("3d_fullres", "NnugenDiffSegTrainer"))
    monkeypatch.setattr(train_api, "ensure_ext_trainer_path", lambda: None)
    monkeypatch.setattr(nnunet_run, "run_training", lambda *args, **kwargs: None)
    monkeypatch.setenv(PRETRAINED_VARIABLE, "")
    train_api.train(train_api.TrainRequest(dataset="901", fold="0", configuration="3d", device="cpu",
                                           pretrained_weights="nnunet/checkpoint_final.pth"))
    expected = str(tmp_path / "nnunet" / "checkpoint_final.pth")
    assert RunFlags.from_environment().pretrained_weights == expected
    train_api.train(train_api.TrainRequest(dataset="901", fold="0", configuration="3d", device="cpu"))
    assert RunFlags.from_environment().pretrained_weights is None


def test_train_partition_flag_reaches_the_trainer(train_requests, monkeypatch):
    """``--partition Z Y X`` becomes the request's pieces and travels to the trainer as run_flags' variable; a
    variable that is not a list of integers is refused in one line."""
    from nnugen.run_flags import PARTITION_VARIABLE, RunFlags

    assert _train(["4", "0", "3d", "--partition", "1", "2", "1"]) == 0
    assert train_requests[0].partition == (1, 2, 1)
    monkeypatch.setenv(PARTITION_VARIABLE, " ".join(map(str, train_requests[0].partition)))
    assert RunFlags.from_environment().partition == (1, 2, 1)
    assert RunFlags(partition=(2, 1)).environment()[PARTITION_VARIABLE] == "2 1"
    assert RunFlags().environment()[PARTITION_VARIABLE] == ""  # a run without it clears an earlier run's
    monkeypatch.setenv(PARTITION_VARIABLE, "1 x")
    with pytest.raises(ValueError, match="NNUGEN_PARTITION='1 x' is not a list of integers"):
        RunFlags.from_environment()


# --- nnugen_sample -------------------------------------------------------------------------------------------------


def test_sample_plans_and_progress(sample_requests, capsys):
    assert _sample(["-p", "nnugenPlansBig", "--progress", "-device", "cpu"]) == 0
    (request,) = sample_requests
    assert request.plans == "nnugenPlansBig" and request.progress is True
    assert (request.dataset, request.configuration, request.num_cases) == ("901", "3d", 2)
    assert capsys.readouterr().err == ""
    assert _sample([]) == 0
    assert sample_requests[1].plans == PLANS_IDENTIFIER and sample_requests[1].progress is False


def test_sample_plans_pick_the_model_folder(monkeypatch, tmp_path):
    from nnugen.inference import sample_request

    monkeypatch.setenv("nnUNet_results", str(tmp_path))
    (tmp_path / "Dataset901_Fake").mkdir()
    request = sample_request.SampleRequest(dataset="901", configuration="3d", num_cases=1,
                                           output_folder=tmp_path / "out", plans="nnugenPlansBig")
    with pytest.raises(ValueError, match=r"NnugenDDPMTrainer__nnugenPlansBig__3d_fullres"):
        sample_request.check_request(request)


def test_sample_bare_p_still_means_progress_with_one_note(sample_requests, capsys):
    assert _sample(["--size", "patch", "-p", "-device", "cpu"]) == 0
    assert sample_requests[0].progress is True and sample_requests[0].plans == PLANS_IDENTIFIER
    assert capsys.readouterr().err.splitlines() == [f"nnugen_sample: {OLD_P}"]


# --- nnugen_predict ------------------------------------------------------------------------------------------------


def test_predict_ensemble_size(predict_requests, capsys):
    assert _predict(["--ensemble-size", "3", "--seed", "7", "-p", "nnugenPlansBig"]) == 0
    (request,) = predict_requests
    assert (request.seeds, request.seed, request.plans) == (3, 7, "nnugenPlansBig")
    assert capsys.readouterr().err == ""
    assert _predict([]) == 0
    assert predict_requests[1].seeds is None and predict_requests[1].seed == 0


def test_predict_old_seeds_still_works_with_one_note(predict_requests, capsys):
    assert _predict(["--seeds", "3", "--seed", "1"]) == 0
    assert (predict_requests[0].seeds, predict_requests[0].seed) == (3, 1)
    assert capsys.readouterr().err.splitlines() == ["nnugen_predict: --seeds is deprecated, use --ensemble-size"]


# --- nnugen_plan, nnugen_demo --------------------------------------------------------------------------------------


def test_plan_p_is_the_nnunet_plans_to_start_from(fake_preprocessed, capsys):
    from nnugen.entrypoints.plan import main

    folder = fake_preprocessed("isotropic")
    assert main(["-d", "901", "-p", "nnUNetPlans", "--no-check"]) == 0
    assert (folder / "nnugenPlans.json").is_file()
    assert capsys.readouterr().err == ""
    assert main(["-d", "901", "-p", "nnUNetResEncUNetMPlans", "--no-check"]) == 1
    assert "nnUNetResEncUNetMPlans.json is missing" in capsys.readouterr().err


def test_plan_old_plans_name_still_works_with_one_note(fake_preprocessed, capsys):
    from nnugen.entrypoints.plan import main

    folder = fake_preprocessed("isotropic")
    assert main(["-d", "901", "-plans_name", "nnUNetPlans", "--no-check"]) == 0
    assert (folder / "nnugenPlans.json").is_file()
    assert capsys.readouterr().err.splitlines() == ["nnugen_plan: -plans_name is deprecated, use -p"]


def test_demo_old_device_still_works_with_one_note(monkeypatch, tmp_path, capsys):
    from nnugen.entrypoints.demo import main

    from nnugen.demo import demo_api

    requests = []
    monkeypatch.setattr(demo_api, "run_demo", requests.append)
    assert main(["--work-dir", str(tmp_path), "--device", "cpu"]) == 0
    assert main(["--work-dir", str(tmp_path), "-device", "cpu"]) == 0
    assert [request.device for request in requests] == ["cpu", "cpu"]
    assert capsys.readouterr().err.splitlines() == ["nnugen_demo: --device is deprecated, use -device"]


# --- --help shows the new spellings only ---------------------------------------------------------------------------


@pytest.mark.parametrize("module, shown, hidden", [
    ("train", ["-p [PLANS]", "--progress"], []),
    ("sample", ["-p [PLANS]", "--progress"], []),
    ("predict", ["--ensemble-size N", "-p P"], ["--seeds"]),
    ("plan", ["-p PLANS"], ["-plans_name"]),
    ("demo", ["-device DEVICE"], ["--device"]),
])
def test_help_shows_new_spellings_only(module, shown, hidden, capsys):
    import importlib

    main = importlib.import_module(f"nnugen.entrypoints.{module}").main
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(flag in text for flag in shown), text
    assert not any(flag in text for flag in hidden), text
