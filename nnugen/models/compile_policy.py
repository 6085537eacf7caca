"""What nnugen compiles with ``torch.compile``, when, and how weights written from a compiled model are read.

nnU-Net wraps the whole network in ``torch.compile`` on CUDA. nnugen's models run more than a network in ``forward``:
a sampler loop with generators, a random self-conditioning coin, Python control flow and per-step state, which
compile into many graphs with breaks between them and recompile as the loop goes. So nnugen compiles only the
networks inside a model, in place (``nn.Module.compile``: the state-dict keys stay those of the plain model), and
the loop around them stays eager. A model names its networks with ``compiled_parts()``; a model without that method
is a plain network (nnU-Net's U-Net of the baseline) and is compiled whole, as nnU-Net does.

When: ``NNUGEN_COMPILE`` (1/0) decides if set, on any device; else on CUDA nnU-Net's ``nnUNet_compile`` (on when
unset, as in nnU-Net's trainer), and off on the CPU and MPS (nnU-Net refuses those too). ``NNUGEN_COMPILE_BACKEND``
picks the backend (``inductor`` by default; ``eager`` or ``aot_eager`` let a CPU test reach the compiled path).

Old files: a model wrapped by ``torch.compile`` has its keys prefixed ``_orig_mod.`` (``module._orig_mod.`` under
DDP). ``without_compile_prefix`` strips that, so weights exported from a compiled model load into a plain one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from nnugen.folders.checkpoint_files import without_compile_prefix

COMPILE_VARIABLE = "NNUGEN_COMPILE"
BACKEND_VARIABLE = "NNUGEN_COMPILE_BACKEND"
NNUNET_VARIABLE = "nnUNet_compile"
BACKENDS = ("inductor", "aot_eager", "eager")
ENTRY_POINTS = ("forward_with_auxiliary",)
"""Methods other than ``__call__`` through which models run a compiled part (the denoiser's deep-supervision pass in
diffusion segmentation training); ``nn.Module.compile`` covers ``__call__`` only, so these are compiled as well."""
_TRUE, _FALSE = ("true", "1", "t"), ("false", "0", "f")


@dataclass(frozen=True)
class CompileDecision:
    enabled: bool
    backend: str
    reason: str
    """What decided, for the training log: the variable or the device."""


def compile_decision(device: torch.device | str, environ: Mapping[str, str] | None = None, default: bool = True,
                     os_name: str = os.name) -> CompileDecision:
    """Whether to compile on ``device``. ``default``: the choice on CUDA when ``nnUNet_compile`` is unset (True in
    training, as nnU-Net's trainer; False in prediction, as nnU-Net's predictor). ValueError on a bad variable."""
    environ = os.environ if environ is None else environ
    backend = environ.get(BACKEND_VARIABLE, "inductor").strip().lower() or "inductor"
    if backend not in BACKENDS:
        raise ValueError(f"{BACKEND_VARIABLE}={environ[BACKEND_VARIABLE]!r} is not a torch.compile backend nnugen "
                         f"uses; set it to one of {', '.join(BACKENDS)} or unset it (inductor)")
    forced = environ.get(COMPILE_VARIABLE, "").strip().lower()
    if forced:
        if forced not in _TRUE + _FALSE:
            raise ValueError(f"{COMPILE_VARIABLE}={environ[COMPILE_VARIABLE]!r}: set it to 1 (compile) or 0 (do not "
                             "compile), or unset it to follow nnUNet_compile on CUDA")
        return CompileDecision(forced in _TRUE, backend, f"{COMPILE_VARIABLE}={environ[COMPILE_VARIABLE]}")
    kind = torch.device(device).type
    if kind != "cuda":
        return CompileDecision(False, backend, f"{kind} device (set {COMPILE_VARIABLE}=1 to compile anyway)")
    if os_name == "nt":
        return CompileDecision(False, backend, f"Windows has no triton for inductor (set {COMPILE_VARIABLE}=1 to "
                                               "compile anyway)")
    if NNUNET_VARIABLE in environ:
        value = environ[NNUNET_VARIABLE]
        return CompileDecision(value.lower() in _TRUE, backend, f"{NNUNET_VARIABLE}={value}")
    return CompileDecision(default, backend, f"{NNUNET_VARIABLE} unset ({'on' if default else 'off'} by default)")


def compiled_parts(model: nn.Module) -> list[nn.Module]:
    """The networks of ``model`` to compile: ``model.compiled_parts()`` when it declares them, else the model."""
    declared = getattr(model, "compiled_parts", None)
    return list(declared()) if callable(declared) else [model]


def compile_parts(model: nn.Module, backend: str | Callable = "inductor") -> list[nn.Module]:
    """Compile the ``compiled_parts`` of ``model`` in place (``__call__`` and ``ENTRY_POINTS``) and return them; a
    part compiled before is left as it is. ``backend``: a name or a dynamo backend callable (tests count graphs)."""
    parts = compiled_parts(model)
    for part in parts:
        if part._compiled_call_impl is not None:
            continue
        part.compile(backend=backend)
        for name in ENTRY_POINTS:
            method = getattr(part, name, None)
            if callable(method):
                setattr(part, name, torch.compile(method, backend=backend))
    return parts


def apply_compile_policy(model: nn.Module, device: torch.device | str, log: Callable[[str], None] = print,
                         default: bool = True, environ: Mapping[str, str] | None = None) -> CompileDecision:
    """Decide (``compile_decision``), compile the model's parts if so, and log one line saying what and why."""
    decision = compile_decision(device, environ, default)
    if not decision.enabled:
        log(f"not compiling: {decision.reason}")
        return decision
    parts = compile_parts(model, decision.backend)
    names = {id(module): name for name, module in model.named_modules()}
    if parts == [model]:
        log(f"compiling the whole network (backend {decision.backend}; {decision.reason})")
    else:
        what = ", ".join(names.get(id(part), type(part).__name__) for part in parts)
        log(f"compiling {what} (backend {decision.backend}; {decision.reason}); the rest of the model's forward "
            "(sampler loops, random draws) stays eager")
    return decision


def uncompiled(module: nn.Module) -> nn.Module:
    """The module inside a ``torch.compile`` wrapper (``OptimizedModule``), else the module itself."""
    inner = getattr(module, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else module


def plain_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of ``module`` as its uncompiled self names it, detached and on the CPU, ready to export."""
    state, _ = without_compile_prefix(uncompiled(module).state_dict())
    return {key: value.detach().cpu() for key, value in state.items()}


@contextmanager
def predictor_compile_off(environ: MutableMapping[str, str] | None = None) -> Iterator[None]:
    """nnU-Net's ``nnUNetPredictor.manual_initialization`` (the trainers' final validation) wraps the whole model in
    ``torch.compile`` when ``nnUNet_compile`` is true, sampler loop included. nnugen's models have compiled their
    networks in place already, so the variable reads false while the predictor is set up, and is restored after."""
    environ = os.environ if environ is None else environ
    previous = environ.get(NNUNET_VARIABLE)
    environ[NNUNET_VARIABLE] = "f"
    try:
        yield
    finally:
        if previous is None:
            environ.pop(NNUNET_VARIABLE, None)
        else:
            environ[NNUNET_VARIABLE] = previous
