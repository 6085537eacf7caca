"""Two torchrun agents, one process each, joined through the c10d rendezvous on one machine (what two nodes of a
cluster run: ``--nnodes 2 --rdzv_backend c10d --rdzv_endpoint HOST:PORT``, docs/scaling.md) train the diffusion
segmenter to checkpoint_final, with the final weights of one agent with two processes for the same seed, bit for bit,
and one set of files. Each agent is pinned to one core (``taskset``, as a cluster's cpuset would), so its process
runs one thread, as each of the lone agent's two processes does on its two cores."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch
from e2e_helpers import cli, free_local_port, nnunet_environment, run, run_all

from nnugen.folders.checkpoint_files import load_nnunet_checkpoint

pytestmark = pytest.mark.slow

SETTINGS = ("segmentation.training.epochs=1", "segmentation.training.iterations_per_epoch=3",
            "segmentation.training.val_iterations_per_epoch=1", "segmentation.training.val_sampling_steps=2",
            "segmentation.sampler.steps=2")
TRAIN = ("902", "0", "2d", "-device", "cpu", "--seed", "0")


def _final_checkpoint(root) -> dict:
    fold = root / "results" / "Dataset902_Tiny2D" / "NnugenDiffSegTrainer__nnugenPlans__2d" / "fold_0"
    return load_nnunet_checkpoint(str(fold / "checkpoint_final.pth"), torch.device("cpu"))


def test_two_agents_joined_by_rendezvous_train_what_one_agent_trains(tiny2d, fresh_results, tmp_path):
    one_agent, two_agents = fresh_results(tiny2d), tmp_path / "two_agents"
    run([cli("nnugen_plan"), "-d", "902", *(a for s in SETTINGS for a in ("--set", s))],
        nnunet_environment(one_agent))
    shutil.copytree(one_agent, two_agents)
    environments = {root: nnunet_environment(root) for root in (one_agent, two_agents)}

    run(["taskset", "-c", "0,1", cli("torchrun"), "--standalone", "--nproc_per_node", "2", cli("nnugen_train"), *TRAIN],
        environments[one_agent])
    rendezvous = ("--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint",
                  f"localhost:{free_local_port()}", "--rdzv_id", "nnugen-two-agents")
    run_all([(["taskset", "-c", str(node), cli("torchrun"), *rendezvous, "--node_rank", str(node),
               cli("nnugen_train"), *TRAIN], environments[two_agents]) for node in (0, 1)])  # each must succeed

    single, joined = _final_checkpoint(one_agent), _final_checkpoint(two_agents)
    assert single["logging"]["train_losses"] == joined["logging"]["train_losses"]
    assert single["nnugen_world_size"] == joined["nnugen_world_size"] == 2
    single, joined = single["network_weights"], joined["network_weights"]
    assert single.keys() == joined.keys()
    differing = [k for k in single if not torch.equal(single[k], joined[k])]
    assert not differing, f"two agents trained other weights than one agent with two processes: {differing[:3]}"
    fold = two_agents / "results" / "Dataset902_Tiny2D" / "NnugenDiffSegTrainer__nnugenPlans__2d" / "fold_0"
    (log,) = fold.glob("training_log_*.txt")  # one set of files
    assert "DDP over 2 ranks: global batch 2 (1 per rank)" in log.read_text()
    assert (fold / "validation" / "summary.json").is_file()

    # resuming the two-process run with one process is refused in one line, and nothing is written
    before = sorted((path, path.stat().st_mtime_ns) for path in fold.rglob("*"))
    result = subprocess.run([cli("nnugen_train"), *TRAIN, "--c"], env=environments[two_agents], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "was trained by 2 process(es) and this run has 1; resume it with 2" in result.stderr
    assert sorted((path, path.stat().st_mtime_ns) for path in fold.rglob("*")) == before
