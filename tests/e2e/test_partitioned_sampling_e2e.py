"""``torchrun --nproc_per_node 2 nnugen_sample ... --partition`` (issue 19): one volume of 2 x 3 windows sampled by
two gloo processes writes the files of one process (``--partition 1 1 1``) to float tolerance, along either axis;
the partition a run cannot use is refused in one line before anything is written.

The model is an untrained DDPM of nnugen_plan's network with 4-8 features per stage (weights saved in nnU-Net's
checkpoint format): sampling needs no training to show that the processes agree."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from e2e_helpers import cli, free_local_port, run_all

SIZE = ("48", "96", "72")  # the patch is 48^3: 1 x 3 x 2 windows
SMALL = ("ddpm.denoiser.features_per_stage=[4,8,8,8]", "ddpm.denoiser.attention_stages=[]",
         "ddpm.denoiser.time_embed_dim=16")


@pytest.fixture(scope="module")
def untrained_ddpm(tmp_path_factory, preprocessed_dataset_writer) -> tuple[Path, dict[str, str]]:
    import os

    import torch

    root = tmp_path_factory.mktemp("partitioned_e2e")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("nnUNet_preprocessed", str(root / "pre"))
        patch.setenv("nnUNet_results", str(root / "results"))
        patch.delenv("nnUNet_raw", raising=False)
        (root / "pre").mkdir()
        dataset = preprocessed_dataset_writer(root / "pre", "isotropic", 901, "Fake")
        from nnugen_planner.planner import PlanRequest, plan_dataset

        plans = plan_dataset(PlanRequest(dataset="901", configurations=("3d_fullres",), sets=SMALL))
        model = root / "results" / "Dataset901_Fake" / "NnugenDDPMTrainer__nnugenPlans__3d_fullres"
        (model / "fold_0").mkdir(parents=True)
        shutil.copy(plans, model / "plans.json")
        shutil.copy(dataset / "dataset.json", model / "dataset.json")
        (model / "fold_0" / "checkpoint_final.pth").write_bytes(b"placeholder until the weights below")
        from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        from nnugen.config import section_of
        from nnugen.inference.generator_loading import find_model_files, generator_settings
        from nnugen.models.model_builders import ModelSpec, build_model

        files = find_model_files("901", "3d", "ddpm", "0", "checkpoint_final.pth", "nnugenPlans")
        manager = PlansManager(files.plans)
        configuration = manager.get_configuration(files.configuration)
        spec = ModelSpec(generator_settings(files), section_of(configuration.configuration, files.configuration),
                         determine_num_input_channels(manager, configuration, files.dataset_json),
                         manager.get_label_manager(files.dataset_json).num_segmentation_heads,
                         tuple(configuration.patch_size))
        torch.manual_seed(0)
        network = build_model("ddpm", spec)
        torch.save({"network_weights": network.state_dict(), "trainer_name": "NnugenDDPMTrainer"},
                   model / "fold_0" / "checkpoint_final.pth")
        env = {**os.environ, "nnUNet_preprocessed": str(root / "pre"), "nnUNet_results": str(root / "results"),
               "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("nnUNet_raw", None)
    return root, env


def _command(out: Path, partition: tuple[str, ...], processes: int = 1) -> list[str]:
    command = [cli("nnugen_sample"), "901", "3d", "1", str(out), "--size", *SIZE, "--sampler", "ddpm", "--steps",
               "2", "--seed", "3", "-device", "cpu", "--no-progress", "--partition", *partition]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   *command]
    return command


def _sample(env, out: Path, partition: tuple[str, ...], processes: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run(_command(out, partition, processes), env=env, capture_output=True, text=True, timeout=600)


def _images(out: Path) -> dict[str, np.ndarray]:
    return {p.name: sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(out.glob("case_*.nii.gz"))}


def test_two_processes_write_the_files_of_one(untrained_ddpm):
    root, env = untrained_ddpm
    partitions = {("1", "3", "1"): 3, ("1", "1", "2"): 2}  # pieces along an axis: processes
    outs = {partition: root / f"two_{''.join(partition)}" for partition in partitions}
    # the three runs side by side (most of each is start-up), each into its own folder
    run_all([(_command(root / "one", ("1", "1", "1")), env),
             *((_command(outs[partition], partition, processes), env) for partition, processes in partitions.items())],
            timeout=600)
    reference = _images(root / "one")
    assert reference and all(np.isfinite(a).all() for a in reference.values())
    for out in outs.values():
        images = _images(out)
        assert images.keys() == reference.keys()
        for name, image in images.items():
            if name.count("_") == 1:  # the label map: the argmax of the untrained model's nearly equal label
                # channels, where a rounding difference may pick another label (7 of 331,776 voxels seen)
                assert (image != reference[name]).mean() < 1e-4, name
                continue
            scale = float(np.abs(reference[name]).max()) or 1.0
            np.testing.assert_allclose(image, reference[name], rtol=0, atol=1e-5 * scale, err_msg=name)
        assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (root / "one").iterdir())


def test_two_agents_joined_by_rendezvous_write_the_files_of_one(untrained_ddpm):
    # two torchrun agents of one process each, as two nodes start them (docs/scaling.md, issue 19 part 3)
    root, env = untrained_ddpm
    endpoint = f"localhost:{free_local_port()}"
    agents = [[sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
               "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", endpoint, "--rdzv_id",
               "nnugen-sample", *_command(root / "agents", ("1", "1", "2"))] for node in (0, 1)]
    run_all([(_command(root / "alone", ("1", "1", "1")), env), *((agent, env) for agent in agents)], timeout=600)
    reference, images = _images(root / "alone"), _images(root / "agents")
    assert reference and images.keys() == reference.keys()
    for name, image in images.items():
        if name.count("_") == 1:  # the label map (see above)
            assert (image != reference[name]).mean() < 1e-4, name
            continue
        scale = float(np.abs(reference[name]).max()) or 1.0
        np.testing.assert_allclose(image, reference[name], rtol=0, atol=1e-5 * scale, err_msg=name)


@pytest.mark.parametrize(("partition", "message"), [
    (("1", "2", "1"), "makes 2 pieces but 1 process(es) run"),
    (("1", "1"), "one number of pieces per spatial axis"),
])
def test_a_partition_the_run_cannot_use_is_one_line_and_writes_nothing(untrained_ddpm, partition, message):
    root, env = untrained_ddpm
    out = root / f"refused_{''.join(partition)}"
    run = _sample(env, out, partition)
    assert run.returncode == 1 and not out.exists()
    assert run.stderr.strip().splitlines() == [next(line for line in run.stderr.splitlines() if message in line)]


def test_more_pieces_than_windows_are_refused_under_torchrun(untrained_ddpm):
    root, env = untrained_ddpm
    out = root / "refused_windows"
    run = _sample(env, out, ("2", "1", "1"), processes=2)  # the first axis holds 1 window of the patch
    assert run.returncode != 0 and not out.exists()
    assert "has only 1 window(s) of the patch 48" in run.stderr
