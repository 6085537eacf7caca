"""Property-based fuzzing of the files nnugen reads (issue 15, "a malformed file gives ``file: field: what is wrong``
and exit 2, never a traceback"): hypothesis mutates a valid planned nnugen section and each side file (denoiser.json,
autoencoder.json, latent.json, threshold.json, sampling.json) -- wrong types, NaN, +-Infinity, missing and unknown
keys, huge values, wrong nesting -- and each mutant either loads, or raises ``MalformedFileError`` with one line that
starts with the file (the section's place in the plans) and names a field on the branch that was mutated; no other
exception type. Fixed example budgets, derandomised: the same examples on every run."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_settings_at_the_door import _valid

from nnugen.anomaly.threshold import ThresholdRecord
from nnugen.config import DenoiserSettings, DiffusionSettings, TaskSettings, section_of
from nnugen.inference.generator_loading import _latent_generator
from nnugen.inference.sampling_record import read_sampling_record
from nnugen.models.autoencoder_files import load_autoencoder, save_autoencoder
from nnugen.models.denoiser_files import denoiser_description, load_denoiser_weights, save_denoiser
from nnugen.models.latent_generator import LATENT_FILE
from nnugen.networks.autoencoder import Autoencoder
from nnugen.typed_section import MalformedFileError

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# Integers come from a fixed set, never "moderately large" ones: a side file's 50000 channels would build a real
# network of that size before any check could refuse it (the loaders build what the file describes).
WRONG = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, None, True, False, 0, -1, 2 ** 63, 10 ** 30, -10 ** 30, 10 ** 400,
                     1e308, -1e308, "", "1.0", "x", [], [1], [[]], {}, {"a": 1}, [math.nan], {"nested": {"x": [1]}}]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.sampled_from([0, 1.5, "a", None, math.inf]), max_size=3),
)
MUTATION = st.tuples(st.sampled_from(["replace", "replace", "replace", "delete", "unknown", "wrap_list",
                                      "wrap_mapping"]), WRONG, st.integers(0, 10 ** 6))


def _nodes(tree: object, path: tuple = ()) -> list[tuple]:
    """Every key path in ``tree`` (mappings and lists)."""
    found = []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        found.append((*path, key))
        found += _nodes(value, (*path, key))
    return found


def _mutate(tree: dict, mutation: tuple) -> tuple[dict, tuple]:
    """``tree`` with one node changed, and that node's path (a key added: the path of the mapping that holds it)."""
    kind, value, pick = mutation
    tree = copy.deepcopy(tree)
    nodes = _nodes(tree)
    path = nodes[pick % len(nodes)]
    parent = tree
    for key in path[:-1]:
        parent = parent[key]
    if kind == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
    elif kind == "unknown" and isinstance(parent, dict):
        parent[f"unknown_{path[-1]}"] = value
    elif kind == "wrap_list":
        parent[path[-1]] = [parent[path[-1]]]
    elif kind == "wrap_mapping":
        parent[path[-1]] = {"value": parent[path[-1]]}
    else:
        parent[path[-1]] = copy.deepcopy(value)
    return tree, path


def _dotted(path: tuple) -> str:
    return "".join(f"[{key}]" if isinstance(key, int) else f".{key}" for key in path)


def _non_finite(tree: object) -> bool:
    if isinstance(tree, float):
        return not math.isfinite(tree)
    values = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, list) else ()
    return any(_non_finite(v) for v in values)


def _check_refusal(error: BaseException, file: str, paths: list[tuple]) -> None:
    """One line, ``FILE: field: what`` (``FILE``: the file, or the section's place in the plans), the field on the
    branch of one of the mutated ``paths`` (or the whole file: ``FILE: what``)."""
    message = str(error)
    assert type(error) is MalformedFileError, (type(error), message)
    assert "\n" not in message and message.startswith(file), message
    first = message[len(file):].split(": ")[0]
    field = "" if " " in first else first if first.startswith((".", "[")) or not first else "." + first
    assert any(_dotted(p).startswith(field) or field.startswith(_dotted(p)) for p in paths), (paths, message)


def _dump(path: Path, data: object) -> None:
    path.write_text(json.dumps(data))  # as json.dumps writes it: NaN as NaN, 1e400 as Infinity


# --- the planned nnugen section ------------------------------------------------------------------------------------

VALID_SECTION = _valid()


@FUZZ
@given(st.lists(MUTATION, min_size=1, max_size=3))
def test_a_mutated_nnugen_section_loads_or_names_the_field(mutations):
    mutant, paths = VALID_SECTION, []
    for mutation in mutations:
        mutant, path = _mutate(mutant, mutation)
        paths.append(path)
    try:
        parsed = section_of(json.loads(json.dumps({"nnugen": mutant})), "3d_fullres")
        [parsed.task(name) for name in parsed.tasks]
    except MalformedFileError as error:
        _check_refusal(error, "3d_fullres.nnugen", paths)
        event("refused")
        return
    event("loaded")
    assert not _non_finite(mutant), mutant  # what loads holds only finite numbers
    assert not _non_finite(parsed.to_dict())


@pytest.mark.parametrize("section", [None, [], "x", 3, math.nan])
def test_a_nnugen_section_of_the_wrong_kind_is_a_malformed_file(section):
    with pytest.raises(MalformedFileError, match=r"^3d_fullres\.nnugen: expected a mapping"):
        section_of({"nnugen": section}, "3d_fullres")


# --- the side files ------------------------------------------------------------------------------------------------

ARGUMENTS = {"in_channels": 1, "features_per_stage": [4, 4], "strides": [[1, 1], [2, 2]], "latent_channels": 2,
             "kind": "kl", "codebook_size": 4}
SETTINGS = TaskSettings(denoiser=DenoiserSettings(features_per_stage=(4, 8), kernel_sizes=((3, 3),) * 2,
                                                  strides=((1, 1), (2, 2)), n_conv_per_stage=(1, 1),
                                                  n_conv_per_stage_decoder=(1,)),
                        diffusion=DiffusionSettings())
DESCRIPTION = denoiser_description(SETTINGS, 1, "image")
RECORD = {"nnugen_version": "0.1", "model_folder": "/results/M", "checkpoint": "/results/M/fold_0/c.pth",
          "trainer": "NnugenDDPMTrainer", "configuration": "2d", "mode": "joint",
          "sampler": {"name": "ddim", "steps": 2, "eta": 0.0, "spacing": "log-snr"}, "guidance_scale": 1.0, "seed": 0,
          "num_cases": 2, "size": "patch", "file_shape": [8, 8], "spacing": [1.0, 1.0], "geometry_source": "plans",
          "intensity_units": "original", "num_parts": 1, "part_id": 0,
          "cases": [{"name": "case_0000", "seed": 11}, {"name": "case_0001", "seed": 12, "label_from": "/l/a.nii.gz"}],
          "request": {"as_dataset": None, "seed": 0, "eta": None, "output_folder": "/out"}}


def _read_denoiser(folder: Path) -> None:
    load_denoiser_weights(folder, DESCRIPTION)


def _read_autoencoder(folder: Path) -> None:
    load_autoencoder(folder)


def _read_latent(folder: Path) -> None:
    _latent_generator(None, SimpleNamespace(fold_folder=folder), 1)


def _read_threshold(folder: Path) -> None:
    ThresholdRecord.load(folder / "threshold.json", "m")


def _read_sampling(folder: Path) -> None:
    read_sampling_record(folder / "sampling.json", "choose a new folder")


@pytest.fixture(scope="module")
def side_files(tmp_path_factory) -> Path:
    """A folder with one valid file of each kind, the weights beside them."""
    folder = tmp_path_factory.mktemp("side_files")
    save_denoiser(torch.nn.Conv2d(1, 2, 3), DESCRIPTION, folder)
    save_autoencoder(Autoencoder(**ARGUMENTS), ARGUMENTS, folder)
    _dump(folder / LATENT_FILE, {"autoencoder_folder": str(folder), "scale_factor": 0.5})
    ThresholdRecord(0.25, "fpr", 0.01, model="m").save(folder / "threshold.json")
    _dump(folder / "sampling.json", RECORD)
    return folder


SIDE_FILES = {"denoiser.json": _read_denoiser, "autoencoder.json": _read_autoencoder, LATENT_FILE: _read_latent,
              "threshold.json": _read_threshold, "sampling.json": _read_sampling}
LOADED_BUT_NOT_THIS_MODEL = {"denoiser.json": "does not match these plans", "autoencoder.json": "does not match",
                             "threshold.json": "threshold file from another model"}
"""Well-formed files that describe another model: refused with one plain ValueError line (exit code 1), not as
malformed (the file's types are right; it belongs elsewhere)."""


@pytest.mark.parametrize("name", list(SIDE_FILES))
def test_every_valid_side_file_loads(side_files, name):
    SIDE_FILES[name](side_files)


@pytest.mark.parametrize("name", list(SIDE_FILES))
@FUZZ
@given(mutations=st.lists(MUTATION, min_size=1, max_size=2))
def test_a_mutated_side_file_loads_or_names_the_file_and_field(side_files, tmp_path_factory, name, mutations):
    folder = tmp_path_factory.mktemp("mutant")
    for file in side_files.iterdir():
        (folder / file.name).write_bytes(file.read_bytes())
    valid = json.loads((side_files / name).read_text())
    if name == LATENT_FILE:
        valid["autoencoder_folder"] = str(folder)
    mutant, paths = valid, []
    for mutation in mutations:
        mutant, path = _mutate(mutant, mutation)
        paths.append(path)
    _dump(folder / name, mutant)
    try:
        SIDE_FILES[name](folder)
    except MalformedFileError as error:
        _check_refusal(error, f"{folder / name}: ", paths)
        event("refused")
        return
    except ValueError as error:
        message = str(error)
        assert type(error) is ValueError and "\n" not in message, message
        if name == LATENT_FILE and "holds no trained autoencoder" in message:  # autoencoder_folder changed
            assert any(p[0] == "autoencoder_folder" for p in paths), message
            return
        assert name in LOADED_BUT_NOT_THIS_MODEL and LOADED_BUT_NOT_THIS_MODEL[name] in message, message
        event("another model's file")
        return
    event("loaded")
    assert not _non_finite(mutant), mutant


@pytest.mark.parametrize("name", list(SIDE_FILES))
@pytest.mark.parametrize("text", ["{", "[1, 2]", "null", '"x"', "[" * 100000, "\udcff"])
def test_a_side_file_that_is_not_a_json_object_is_malformed(side_files, tmp_path, name, text):
    for file in side_files.iterdir():
        (tmp_path / file.name).write_bytes(file.read_bytes())
    (tmp_path / name).write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(MalformedFileError) as error:
        SIDE_FILES[name](tmp_path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / name}: "), message
