"""nnU-Net's checkpoint format, written crash-safely. nnU-Net writes checkpoints in place, so a kill mid-write
leaves a file that no longer loads; here the file is written to a temporary name, fsynced and renamed (the previous
checkpoint stays valid until the swap), never with non-finite weights, and with the RNG states so a resumed seeded
run continues its random stream. Loading is weights only, with NumPy's scalar and array types allowed (nnU-Net's
format stores logged values as NumPy scalars); a file that needs anything else, or does not load, gets a one-line
error."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping

import numpy as np
import torch
from torch._dynamo import OptimizedModule

from nnugen.atomic_files import atomic_torch_save, torn_writes

COMPILE_PREFIX = "_orig_mod."
"""What ``torch.compile``'s wrapper puts before the keys of a compiled module's state dict."""
DDP_COMPILE_PREFIX = "module._orig_mod."
CHECKPOINT_NAMES = ("checkpoint_latest.pth", "checkpoint_best.pth", "checkpoint_final.pth")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def unwrapped_network(trainer) -> torch.nn.Module:
    module = trainer.network.module if trainer.is_ddp else trainer.network
    return module._orig_mod if isinstance(module, OptimizedModule) else module


def save_nnunet_checkpoint(trainer, filename: str) -> None:
    """The keys nnU-Net's ``save_checkpoint`` writes (so nnU-Net's loader and predictor read it), plus RNG states."""
    weights = unwrapped_network(trainer).state_dict()
    bad = [name for name, value in weights.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        trainer.print_to_log_file(f"NOT saving {os.path.basename(filename)}: non-finite weights in {bad[0]} "
                                  f"(and {len(bad) - 1} more); the previous checkpoint is kept")
        return
    checkpoint = {
        "network_weights": weights,
        "optimizer_state": trainer.optimizer.state_dict(),
        "grad_scaler_state": trainer.grad_scaler.state_dict() if trainer.grad_scaler is not None else None,
        "logging": trainer.logger.get_checkpoint(),
        "_best_ema": trainer._best_ema,
        "current_epoch": trainer.current_epoch + 1,
        "init_args": trainer.my_init_kwargs,
        "trainer_name": trainer.__class__.__name__,
        "inference_allowed_mirroring_axes": trainer.inference_allowed_mirroring_axes,
        "nnugen_rng": rng_states(),
        "nnugen_world_size": _world_size(),
        **trainer.extra_checkpoint_state(),
    }
    atomic_torch_save(checkpoint, filename)


def _world_size() -> int:
    distributed = torch.distributed
    return distributed.get_world_size() if distributed.is_available() and distributed.is_initialized() else 1


def check_resume_world_size(filename: str, world_size: int) -> None:
    """CheckpointError when ``--c`` would continue a run with another number of processes than trained it: the
    batch plan for the world size, the ranks' random streams and so the run would change halfway. Checkpoints
    written before nnugen recorded the number are not checked."""
    # memory-mapped: only the pickled entries are read here, not the weights, which the run itself loads next
    trained = load_nnunet_checkpoint(filename, torch.device("cpu"), mmap=True).get("nnugen_world_size")
    if trained is not None and int(trained) != world_size:
        raise CheckpointError(f"{filename} was trained by {int(trained)} process(es) and this run has {world_size}; "
                              f"resume it with {int(trained)} (torchrun's --nnodes x --nproc_per_node, or "
                              "-num_gpus), or train the fold again without --c")


def remove_torn_writes(folder: str) -> list[str]:
    """Delete the temporaries of checkpoint writes a kill interrupted (the checkpoints themselves are whole);
    returns their names."""
    removed = []
    for name in CHECKPOINT_NAMES:
        for path in torn_writes(os.path.join(folder, name)):
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed


def resume_checkpoint(fold_folder: str) -> str | None:
    """The file nnU-Net's ``--c`` loads: checkpoint_final, else checkpoint_latest, else checkpoint_best."""
    for name in ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth"):
        if os.path.isfile(os.path.join(fold_folder, name)):
            return os.path.join(fold_folder, name)
    return None


def check_checkpoint_file(filename: str) -> None:
    """CheckpointError unless the file is a whole torch zip archive (a cheap look at its directory, no unpickling);
    lets ``nnugen_train --c`` refuse a broken file before nnU-Net's run writes its log."""
    try:
        with zipfile.ZipFile(filename) as archive:
            archive.namelist()
    except (OSError, zipfile.BadZipFile) as error:
        raise _does_not_load(filename, error) from None


def _does_not_load(filename: str, error: BaseException) -> CheckpointError:
    return CheckpointError(f"{filename} does not load ({type(error).__name__}); delete it and resume with --c from "
                           "the previous checkpoint, or train again")


def load_nnunet_checkpoint(filename: str, device: torch.device, mmap: bool = False) -> dict:
    """The checkpoint as a dict, loaded weights only onto the CPU; with ``mmap`` its tensors are memory-mapped from
    the file (read only when touched). CheckpointError naming the file and the fix when it does not load."""
    if not os.path.isfile(filename):
        raise CheckpointError(f"{filename} does not exist; train first (nnugen_train) or check the fold and "
                              "configuration")
    try:
        # weights only: besides tensors and plain Python values, nnU-Net's format holds NumPy scalars and arrays (the
        # logged values, _best_ema, older nnugen RNG states), the only other types allowed to be built. Onto the CPU,
        # whatever the training device: the RNG states must be CPU ByteTensors (torch.set_rng_state refuses a CUDA
        # tensor), and load_state_dict copies weights and optimiser moments to their parameters' devices anyway
        with torch.serialization.safe_globals(_numpy_globals()):
            checkpoint = torch.load(filename, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        refused = re.search(r"but got <class '([^']+)'>|GLOBAL ([\w.]+)", str(error))
        if "Weights only load failed" not in str(error) or refused is None:
            raise _does_not_load(filename, error) from None
        what = next(name for name in refused.groups() if name)
        raise CheckpointError(f"{filename} holds {what}, which nnugen does not unpickle (checkpoints load weights "
                              "only); it was not written by nnU-Net or nnugen: train again") from None
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a broken file
        raise _does_not_load(filename, error) from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise CheckpointError(f"{filename} is not an nnU-Net checkpoint; delete it or train again")
    return checkpoint


def restore_nnunet_checkpoint(trainer, checkpoint: dict) -> None:
    """What nnU-Net's ``load_checkpoint`` restores, from an already loaded dict (nnU-Net 2.8.1's own method only
    works when given a file name), plus nnugen's RNG states."""
    network = unwrapped_network(trainer)
    expected = network.state_dict().keys()
    weights, compiled = without_compile_prefix(checkpoint["network_weights"])
    if compiled:
        trainer.print_to_log_file("note: the checkpoint's weights were saved from a torch.compile'd model (keys "
                                  "'_orig_mod.'); read without the prefix")
    weights = {k[7:] if k not in expected and k.startswith("module.") else k: v for k, v in weights.items()}
    network.load_state_dict(weights)
    trainer.my_init_kwargs = checkpoint["init_args"]
    trainer.current_epoch = checkpoint["current_epoch"]
    trainer.logger.load_checkpoint(checkpoint["logging"])
    trainer._best_ema = checkpoint["_best_ema"]
    trainer.inference_allowed_mirroring_axes = checkpoint.get("inference_allowed_mirroring_axes",
                                                              trainer.inference_allowed_mirroring_axes)
    trainer.optimizer.load_state_dict(checkpoint["optimizer_state"])
    if trainer.grad_scaler is not None and checkpoint.get("grad_scaler_state") is not None:
        trainer.grad_scaler.load_state_dict(checkpoint["grad_scaler_state"])
    rng = checkpoint.get("nnugen_rng")
    if rng is not None:
        restore_rng_states(rng, trainer.print_to_log_file)


def _numpy_globals() -> list:
    """The NumPy types a weights-only load of an nnU-Net checkpoint may build: arrays, scalars and their dtypes (as
    NumPy 2 pickles them, and as NumPy 1 did, under ``numpy.core``)."""
    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy 1
        from numpy.core import multiarray
    dtypes = [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFD"]
    numpy1 = [(multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
              (multiarray.scalar, "numpy.core.multiarray.scalar")]
    return [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar, *dtypes, *numpy1]


def rng_states() -> dict:
    """The random streams a seeded run continues after ``--c``: torch's CPU generator, NumPy's (as tensors and plain
    numbers, so the checkpoint entry loads weights only), and the CUDA generators of this process's visible GPUs
    (the noise of diffusion training is drawn there on a GPU)."""
    name, key, position, has_gauss, gauss = np.random.get_state()
    states = {"torch": torch.get_rng_state(),
              "numpy": {"bit_generator": str(name), "key": torch.from_numpy(key.astype(np.int64)),
                        "pos": int(position), "has_gauss": int(has_gauss), "cached_gaussian": float(gauss)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict, log=print) -> None:
    """Counterpart of ``rng_states``. The states are moved to the CPU first, so a checkpoint loaded onto a GPU (by an
    older nnugen, or by nnU-Net's own loader) restores too. CUDA states are restored when this process sees as many
    GPUs as the run that saved them, else the CUDA streams start afresh (logged)."""
    torch.set_rng_state(_cpu_bytes(states["torch"]))
    numpy = states["numpy"]
    if isinstance(numpy, dict):  # older checkpoints hold NumPy's own tuple
        numpy = (numpy["bit_generator"], numpy["key"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                 numpy["cached_gaussian"])
    np.random.set_state(numpy)
    cuda = states.get("cuda")
    if not cuda:
        return
    if torch.cuda.is_available() and torch.cuda.device_count() == len(cuda):
        torch.cuda.set_rng_state_all([_cpu_bytes(state) for state in cuda])
    else:
        log(f"the checkpoint holds the random state of {len(cuda)} GPU(s) and this process sees "
            f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}: GPU random streams start afresh")


def _cpu_bytes(state: torch.Tensor) -> torch.Tensor:
    """An RNG state as torch.set_rng_state takes it: a CPU uint8 tensor."""
    if state.device.type == "meta":
        raise CheckpointError("the checkpoint's random state holds no data (loaded onto the meta device); load it "
                              "with map_location='cpu'")
    return state.detach().to("cpu", torch.uint8)


def without_compile_prefix(state: Mapping[str, object]) -> tuple[dict, bool]:
    """(``state`` with the compile wrapper's ``_orig_mod.`` removed from its keys, wherever it sits, and DDP's
    ``module._orig_mod.`` at the start; whether any key had it)."""
    stripped, found = {}, False
    for key, value in state.items():
        if COMPILE_PREFIX in key:
            found = True
            key = key[len("module."):] if key.startswith(DDP_COMPILE_PREFIX) else key
            key = key.replace(COMPILE_PREFIX, "")
        stripped[key] = value
    return stripped, found
