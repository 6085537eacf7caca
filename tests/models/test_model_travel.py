"""Models that travel (issue 17, part 4), on small synthetic folders: the latent model's autoencoder inside its
checkpoint, ``latent.json``'s relative path (and the absolute path of older versions), ``debug.json`` without this
machine's folders, the ``validation/summary.json`` export needs from a generative model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nnugen.folders.portable_paths import make_portable, make_validation_portable, portable_text
from nnugen.folders.validation_summary import write_generative_summary
from nnugen.inference.generator_loading import _latent_generator
from nnugen.models.autoencoder_files import (
    ARGUMENTS_KEY,
    CHECKPOINT_KEY,
    autoencoder_entry,
    autoencoder_from_entry,
    load_autoencoder,
    save_autoencoder,
)
from nnugen.models.latent_files import LATENT_FILE, SCALE_KEY, read_latent_record, write_latent_record
from nnugen.networks.autoencoder import Autoencoder

ARGUMENTS = {"in_channels": 1, "features_per_stage": [8, 8], "strides": [[1, 1], [2, 2]], "latent_channels": 2,
             "kind": "kl", "codebook_size": 16}
AE = "NnugenAutoencoderTrainer__nnugenPlans__2d"
LDM = "NnugenLDMTrainer__nnugenPlans__2d"


def _autoencoder(seed: int = 0) -> Autoencoder:
    torch.manual_seed(seed)
    return Autoencoder(**ARGUMENTS)


@pytest.fixture()
def results(tmp_path) -> Path:
    """``results/Dataset001_X`` with an exported autoencoder (fold 0) and a latent model's fold folder."""
    dataset = tmp_path / "results" / "Dataset001_X"
    (dataset / AE / "fold_0").mkdir(parents=True)
    (dataset / LDM / "fold_0").mkdir(parents=True)
    save_autoencoder(_autoencoder(), ARGUMENTS, dataset / AE / "fold_0")
    return tmp_path / "results"


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_latent_json_names_the_autoencoder_relative_to_the_fold_and_survives_a_move(results, tmp_path):
    fold = results / "Dataset001_X" / LDM / "fold_0"
    write_latent_record(fold, results / "Dataset001_X" / AE / "fold_0", 0.75)
    assert json.loads((fold / LATENT_FILE).read_text()) == {"autoencoder_folder": f"../../{AE}/fold_0",
                                                            "scale_factor": 0.75}
    moved = tmp_path / "elsewhere" / "results"
    shutil.move(results, moved)
    record = read_latent_record(moved / "Dataset001_X" / LDM / "fold_0")
    assert record.autoencoder_folder == moved / "Dataset001_X" / AE / "fold_0" and record.scale_factor == 0.75
    assert _same_weights(load_autoencoder(record.autoencoder_folder)[0], _autoencoder())


def test_an_older_absolute_path_is_used_where_it_exists_else_looked_for_beside_the_model(results, tmp_path):
    fold = results / "Dataset001_X" / LDM / "fold_0"
    trained_at = results / "Dataset001_X" / AE / "fold_0"
    (fold / LATENT_FILE).write_text(json.dumps({"autoencoder_folder": str(trained_at), "scale_factor": 0.5}))
    assert read_latent_record(fold).autoencoder_folder == trained_at
    moved = tmp_path / "moved"
    shutil.move(results, moved)  # the recorded folder is gone; the same model folder lies beside the latent model's
    assert read_latent_record(moved / "Dataset001_X" / LDM / "fold_0").autoencoder_folder == \
        moved / "Dataset001_X" / AE / "fold_0"
    shutil.rmtree(moved / "Dataset001_X" / AE)
    with pytest.raises(ValueError) as error:
        read_latent_record(moved / "Dataset001_X" / LDM / "fold_0")
    message = str(error.value)
    assert "\n" not in message and type(error.value) is ValueError
    assert message.startswith(f"{moved / 'Dataset001_X' / LDM / 'fold_0' / LATENT_FILE}: autoencoder_folder "
                              f"{trained_at} holds no trained autoencoder here")
    assert f"copy that autoencoder's fold folder to {moved / 'Dataset001_X' / AE / 'fold_0'}" in message


def test_the_checkpoint_carries_the_autoencoder_and_loads_weights_only(results, tmp_path):
    autoencoder = _autoencoder()
    checkpoint = {"network_weights": {}, SCALE_KEY: 0.25, CHECKPOINT_KEY: autoencoder_entry(autoencoder, ARGUMENTS)}
    torch.save(checkpoint, tmp_path / "checkpoint_final.pth")
    loaded = torch.load(tmp_path / "checkpoint_final.pth", map_location="cpu", weights_only=True)
    fold = results / "Dataset001_X" / LDM / "fold_0"  # no latent.json, no autoencoder folder needed
    shutil.rmtree(results / "Dataset001_X" / AE)
    files = SimpleNamespace(fold_folder=fold, checkpoint=tmp_path / "checkpoint_final.pth")
    generator = _latent_generator(None, files, 1, loaded)
    assert generator.scale_factor == 0.25 and _same_weights(generator.autoencoder, autoencoder)
    assert not generator.autoencoder.training and not any(p.requires_grad for p in generator.autoencoder.parameters())
    image = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8)
    assert torch.equal(generator.autoencoder.encode(image).mode(), autoencoder.eval().encode(image).mode())


def test_without_the_checkpoints_autoencoder_latent_json_is_read(results):
    fold = results / "Dataset001_X" / LDM / "fold_0"
    write_latent_record(fold, results / "Dataset001_X" / AE / "fold_0", 0.5)
    files = SimpleNamespace(fold_folder=fold, checkpoint=fold / "checkpoint_final.pth")
    generator = _latent_generator(None, files, 1, {"network_weights": {}, SCALE_KEY: 0.5})
    assert generator.scale_factor == 0.5 and _same_weights(generator.autoencoder, _autoencoder())


@pytest.mark.parametrize("entry, scale, message", [
    ({"arguments": ARGUMENTS}, 0.5, "nnugen_autoencoder is not an autoencoder's arguments and weights"),
    ({"arguments": {**ARGUMENTS, "latent_channels": 3}, "weights": None}, 0.5, "not an autoencoder's arguments"),
    ("weights", 0.5, "is not an autoencoder's arguments and weights"),
    (None, -1.0, "nnugen_latent_scale_factor -1.0 is not a scale factor > 0"),
    (None, None, "nnugen_latent_scale_factor None is not a scale factor > 0"),
])
def test_a_broken_checkpoint_entry_is_one_line(tmp_path, entry, scale, message):
    entry = autoencoder_entry(_autoencoder(), ARGUMENTS) if entry is None else entry
    files = SimpleNamespace(fold_folder=tmp_path, checkpoint=tmp_path / "checkpoint_final.pth")
    with pytest.raises(ValueError) as error:
        _latent_generator(None, files, 1, {SCALE_KEY: scale, CHECKPOINT_KEY: entry})
    assert str(error.value).startswith(f"{tmp_path / 'checkpoint_final.pth'}: ") and message in str(error.value)
    assert str(error.value).endswith("train the latent model again (nnugen_train ID FOLD CONFIG --task ldm)")


def test_weights_that_do_not_fit_the_arguments_are_one_line():
    entry = autoencoder_entry(_autoencoder(), ARGUMENTS)
    entry["arguments"] = {**ARGUMENTS, "latent_channels": 3}
    with pytest.raises(ValueError, match=r"^X: the autoencoder's weights do not fit its arguments \(.*\); fix it$"):
        autoencoder_from_entry(entry, "X", "fix it")


def test_debug_json_names_the_roots_not_this_machines_folders(tmp_path):
    environ = {"nnUNet_results": str(tmp_path / "results"), "nnUNet_preprocessed": str(tmp_path / "pre") + "/",
               "nnUNet_raw": ""}
    text = json.dumps({"output_folder": f"{tmp_path}/results/Dataset001_X/T__P__2d/fold_0",
                       "preprocessed_dataset_folder": f"{tmp_path}/pre/Dataset001_X/nnUNetPlans_2d",
                       "other": f"{tmp_path}/results2/x", "plain": "results"})
    assert json.loads(portable_text(text, environ)) == {
        "output_folder": "$nnUNet_results/Dataset001_X/T__P__2d/fold_0",
        "preprocessed_dataset_folder": "$nnUNet_preprocessed/Dataset001_X/nnUNetPlans_2d",
        "other": f"{tmp_path}/results2/x", "plain": "results"}
    (tmp_path / "debug.json").write_text(text)
    make_portable(tmp_path / "debug.json", environ)
    assert json.loads((tmp_path / "debug.json").read_text())["output_folder"].startswith("$nnUNet_results/")


def test_a_generative_model_gets_the_validation_summary_export_copies(tmp_path):
    target = write_generative_summary(tmp_path, "NnugenLDMTrainer", [0.5, 0.25, float("nan")])
    assert target == tmp_path / "validation" / "summary.json"
    summary = json.loads(target.read_text())
    assert summary["trainer"] == "NnugenLDMTrainer" and summary["validation_loss_last_epoch"] == 0.25
    assert "foreground_mean" not in summary and summary["generative_model"] is True
    assert json.loads(write_generative_summary(tmp_path, "T", []).read_text())["validation_loss_last_epoch"] is None


def test_an_autoencoder_fold_without_its_side_files_loads_from_its_checkpoint(tmp_path):
    trained = _autoencoder(3)
    compiled_keys = {f"encoder._orig_mod.{k[len('encoder.'):]}" if k.startswith("encoder.") else k: v
                     for k, v in trained.state_dict().items()}
    torch.save({"network_weights": compiled_keys, ARGUMENTS_KEY: ARGUMENTS}, tmp_path / "checkpoint_final.pth")
    notes = []
    autoencoder, arguments = load_autoencoder(tmp_path, note=notes.append)
    assert arguments == ARGUMENTS and _same_weights(autoencoder, trained) and not autoencoder.training
    assert len(notes) == 1 and "torch.compile" in notes[0]
    torch.save({"network_weights": trained.state_dict()}, tmp_path / "checkpoint_final.pth")
    with pytest.raises(ValueError, match=r"does not name the autoencoder's arguments .*copy those two files from"):
        load_autoencoder(tmp_path)


def test_an_installed_base_model_without_its_denoiser_files_says_to_copy_them(tmp_path):
    from nnugen.models.denoiser_files import load_denoiser_weights

    (tmp_path / "checkpoint_final.pth").write_bytes(b"")
    with pytest.raises(ValueError) as error:
        load_denoiser_weights(tmp_path, {})
    assert str(error.value) == (
        f"{tmp_path} holds a trained DDPM but not its denoiser.json + denoiser_weights.pt "
        "(nnUNetv2_export_model_to_zip does not copy them); copy both from the fold folder it was trained in, or "
        "train the base here: nnugen_plan --set ddpm.generation.mode=image, then nnugen_train ID FOLD CONFIG --task "
        "ddpm")


def test_nnunets_validation_summary_names_its_files_under_the_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    fold = tmp_path / "results" / "Dataset001_X" / "T__P__2d" / "fold_0"
    (fold / "validation").mkdir(parents=True)
    make_validation_portable(fold)  # no summary yet: nothing to do
    case = {"prediction_file": str(fold / "validation" / "X_001.nii.gz"),
            "reference_file": str(tmp_path / "preprocessed" / "Dataset001_X" / "gt_segmentations" / "X_001.nii.gz"),
            "metrics": {"1": {"Dice": 0.5}}}
    (fold / "validation" / "summary.json").write_text(json.dumps({"metric_per_case": [case]}, indent=4))
    make_validation_portable(fold)
    assert json.loads((fold / "validation" / "summary.json").read_text())["metric_per_case"] == [{
        "prediction_file": "$nnUNet_results/Dataset001_X/T__P__2d/fold_0/validation/X_001.nii.gz",
        "reference_file": "$nnUNet_preprocessed/Dataset001_X/gt_segmentations/X_001.nii.gz",
        "metrics": {"1": {"Dice": 0.5}}}]
