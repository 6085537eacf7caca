"""nnugen's compile policy: when it compiles (nnU-Net's ``nnUNet_compile`` on CUDA, ``NNUGEN_COMPILE`` anywhere), that
it compiles the networks inside a model and never the sampler loop (counted with ``torch._dynamo`` on the CPU, where
nnU-Net itself never compiles), that state-dict keys stay those of the plain model, and that nnugen's trainers use it
instead of nnU-Net's whole-model wrap."""

from __future__ import annotations

import os
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from torch._dynamo.testing import CompileCounter
from torch._dynamo.utils import counters

from nnugen.config import (
    AnomalySettings,
    ChannelIntensity,
    DenoiserSettings,
    DiffusionSettings,
    GenerationSettings,
    IntensitySettings,
    SamplerSettings,
)
from nnugen.models.anomaly_segmenter import AnomalySegmenter
from nnugen.models.compile_policy import (
    apply_compile_policy,
    compile_decision,
    compile_parts,
    compiled_parts,
    without_compile_prefix,
)
from nnugen.models.diffusion_segmenter import DiffusionSegmenter
from nnugen.models.image_generator import ImageGenerator
from nnugen.networks import TimeConditionedUNet
from nnugen.networks.autoencoder import Autoencoder


@pytest.fixture(autouse=True)
def _fresh_dynamo(monkeypatch):
    for name in ("NNUGEN_COMPILE", "NNUGEN_COMPILE_BACKEND", "nnUNet_compile"):
        monkeypatch.delenv(name, raising=False)
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def _unet(in_channels: int, out_channels: int) -> TimeConditionedUNet:
    return TimeConditionedUNet(in_channels, out_channels, features_per_stage=(4, 8), kernel_sizes=((3, 3),) * 2,
                               strides=((1, 1), (2, 2)), n_conv_per_stage=(1, 1), n_conv_per_stage_decoder=(1,))


def _segmenter(steps: int = 5) -> DiffusionSegmenter:
    torch.manual_seed(0)
    # self-conditioning: the loop adds per-step state, the network still sees the same shapes every step
    diffusion = DiffusionSettings(timesteps=10, model_output="x0", self_conditioning=True)
    return DiffusionSegmenter(_unet(1 + 2 + 2, 2), 2, diffusion, SamplerSettings(name="ddim", steps=steps)).eval()


def _image() -> torch.Tensor:
    return torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("device, environ, default, enabled", [
    ("cuda", {}, True, True),  # nnU-Net's trainer: on by default
    ("cuda", {"nnUNet_compile": "f"}, True, False),
    ("cuda", {"nnUNet_compile": "false"}, True, False),
    ("cuda", {"nnUNet_compile": "T"}, False, True),
    ("cuda", {}, False, False),  # nnU-Net's predictor: off unless nnUNet_compile asks
    ("cpu", {}, True, False),
    ("cpu", {"nnUNet_compile": "t"}, True, False),  # nnU-Net refuses the CPU too
    ("mps", {"nnUNet_compile": "1"}, True, False),
    ("cpu", {"NNUGEN_COMPILE": "1"}, True, True),
    ("cpu", {"NNUGEN_COMPILE": "true", "nnUNet_compile": "f"}, True, True),
    ("cuda", {"NNUGEN_COMPILE": "0"}, True, False),
])
def test_decision_table(device, environ, default, enabled):
    decision = compile_decision(device, environ, default, os_name="posix")
    assert decision.enabled is enabled
    assert decision.backend == "inductor"


def test_windows_and_backend_choice():
    assert not compile_decision("cuda", {}, os_name="nt").enabled
    assert compile_decision("cuda", {"NNUGEN_COMPILE": "1"}, os_name="nt").enabled
    assert compile_decision("cpu", {"NNUGEN_COMPILE_BACKEND": "Eager"}).backend == "eager"


@pytest.mark.parametrize("environ, message", [({"NNUGEN_COMPILE": "yes"}, "set it to 1"),
                                              ({"NNUGEN_COMPILE_BACKEND": "tvm"}, "one of inductor, aot_eager")])
def test_bad_variables_say_what_to_set(environ, message):
    with pytest.raises(ValueError, match=message):
        compile_decision("cpu", environ)


def test_sampling_compiles_the_denoiser_once_and_not_the_loop():
    model = _segmenter(steps=5)
    keys = list(model.state_dict())
    with torch.no_grad():
        eager = model(_image())
    counter = CompileCounter()
    assert compile_parts(model, counter) == [model.denoiser]
    assert list(model.state_dict()) == keys  # in place: no '_orig_mod.' in the checkpoint
    with torch.no_grad():
        compiled = model(_image())
    # 5 sampler steps (with self-conditioning): one graph, the denoiser's, compiled once and reused every step
    assert counter.frame_count == 1
    torch.testing.assert_close(compiled, eager)
    # another run of the loop, other timesteps and noise: no recompilation
    with torch.no_grad(), model.sampling(replace(model.planned_sampler, steps=8), seed=3):
        model(_image())
    assert counter.frame_count == 1
    assert model._compiled_call_impl is None  # the model's forward, the sampler loop, stays eager


def test_policy_forced_on_the_cpu_with_the_eager_backend(monkeypatch):
    monkeypatch.setenv("NNUGEN_COMPILE", "1")
    monkeypatch.setenv("NNUGEN_COMPILE_BACKEND", "eager")
    model, lines = _segmenter(steps=5), []
    decision = apply_compile_policy(model, torch.device("cpu"), lines.append)
    assert decision.enabled and decision.backend == "eager"
    assert len(lines) == 1 and lines[0].startswith("compiling denoiser (backend eager")
    with torch.no_grad():
        model(_image())
    assert counters["stats"]["unique_graphs"] == 1
    assert not counters["graph_break"]  # the denoiser compiles into one graph


def test_policy_is_off_on_the_cpu_by_default():
    model, lines = _segmenter(), []
    assert not apply_compile_policy(model, "cpu", lines.append).enabled
    assert lines == ["not compiling: cpu device (set NNUGEN_COMPILE=1 to compile anyway)"]
    assert model.denoiser._compiled_call_impl is None


def test_training_compiles_the_deep_supervision_pass_of_the_denoiser():
    model, counter = _segmenter().train(), CompileCounter()
    compile_parts(model, counter)
    onehot = torch.nn.functional.one_hot(torch.randint(0, 2, (2, 8, 8)), 2).movedim(-1, 1).float()
    model(torch.randn(2, 1, 8, 8), onehot).backward()
    assert counter.frame_count >= 1
    assert model.denoiser.head.weight.grad is not None


def test_parts_per_model():
    plain = torch.nn.Conv2d(1, 1, 3)  # a plain network (the baseline's): compiled whole, as nnU-Net does
    assert compiled_parts(plain) == [plain]
    keys = list(plain.state_dict())
    compile_parts(plain, "eager")
    assert plain._compiled_call_impl is not None and list(plain.state_dict()) == keys
    autoencoder = Autoencoder(1, (8, 8), ((1, 1), (2, 2)), latent_channels=2)
    assert compiled_parts(autoencoder) == [autoencoder.encoder, autoencoder.decoder]
    generator = ImageGenerator(_unet(2, 2), 2, 0, (8, 8), DiffusionSettings(), SamplerSettings(),
                               GenerationSettings(mode="image"), ema_decay=0.99)
    assert compiled_parts(generator) == [generator.denoiser, generator.ema]
    settings = AnomalySettings(space="latent", strengths=(0.5,), median_filter=0, mask_to_body=False,
                               latent_denoiser=DenoiserSettings(features_per_stage=(8,), kernel_sizes=((3, 3),),
                                                                strides=((1, 1),), n_conv_per_stage=(1,),
                                                                n_conv_per_stage_decoder=()))
    intensity = IntensitySettings(channels=(ChannelIntensity(),))
    anomaly = AnomalySegmenter(generator, settings, intensity, 2, autoencoder=autoencoder)
    assert compiled_parts(anomaly) == [generator.denoiser, generator.ema, autoencoder.encoder, autoencoder.decoder]


def test_old_keys_lose_the_compile_prefix():
    state = {"_orig_mod.a": 1, "module._orig_mod.b": 2, "x._orig_mod.c": 3, "module.d": 4}
    assert without_compile_prefix(state) == ({"a": 1, "b": 2, "x.c": 3, "module.d": 4}, True)
    assert without_compile_prefix({"a": 1}) == ({"a": 1}, False)


def test_nnugen_trainers_compile_by_nnugen_policy_not_nnunets(monkeypatch):
    from nnugen.trainers.nnugen_trainer import NnugenTrainer

    monkeypatch.setenv("nnUNet_compile", "t")
    assert NnugenTrainer._do_i_compile(SimpleNamespace()) is False  # nnU-Net never wraps the model
    monkeypatch.setenv("NNUGEN_COMPILE", "1")
    monkeypatch.setenv("NNUGEN_COMPILE_BACKEND", "eager")
    lines = []
    trainer = SimpleNamespace(network=_segmenter(), device=torch.device("cpu"), print_to_log_file=lines.append)
    NnugenTrainer.compile_networks(trainer)
    assert trainer.network.denoiser._compiled_call_impl is not None and trainer.network._compiled_call_impl is None
    assert lines[0].startswith("compiling denoiser (backend eager")


def test_a_checkpoint_with_compiled_keys_is_restored():
    from nnugen.folders.checkpoint_files import restore_nnunet_checkpoint

    source, target = _segmenter(), _segmenter()
    torch.nn.init.constant_(source.denoiser.head.weight, 0.5)
    lines = []
    trainer = SimpleNamespace(network=target, is_ddp=False, print_to_log_file=lines.append, grad_scaler=None,
                              logger=SimpleNamespace(load_checkpoint=lambda logging: None), my_init_kwargs={},
                              current_epoch=0, _best_ema=None, inference_allowed_mirroring_axes=None,
                              optimizer=torch.optim.SGD(target.parameters(), 0.1))
    checkpoint = {"network_weights": {f"_orig_mod.{k}": v for k, v in source.state_dict().items()},
                  "init_args": {}, "current_epoch": 3, "logging": {}, "_best_ema": None,
                  "optimizer_state": trainer.optimizer.state_dict()}
    restore_nnunet_checkpoint(trainer, checkpoint)
    torch.testing.assert_close(target.denoiser.head.weight, source.denoiser.head.weight)
    assert any("torch.compile" in line for line in lines)


@pytest.mark.parametrize("before", [None, "t", "1"])
def test_final_validation_keeps_nnunets_predictor_from_compiling_the_loop(before):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnugen.models.compile_policy import predictor_compile_off

    environ = {} if before is None else {"nnUNet_compile": before}
    model = torch.nn.Conv2d(1, 2, 1)
    predictor = nnUNetPredictor(device=torch.device("cpu"), allow_tqdm=False)
    plans = PlansManager({"dataset_name": "Dataset001_X", "plans_name": "nnugenPlans", "configurations": {},
                          "original_median_spacing_after_transp": [1, 1], "image_reader_writer": "SimpleITKIO",
                          "transpose_forward": [0, 1], "transpose_backward": [0, 1],
                          "foreground_intensity_properties_per_channel": {}})
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update({**saved, **environ})
    try:
        with predictor_compile_off():
            predictor.manual_initialization(model, plans, None, None, {"labels": {"background": 0, "a": 1}},
                                            "T", None)
        assert os.environ.get("nnUNet_compile") == (None if before is None else before)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert predictor.network is model, "nnU-Net's predictor wrapped the model in torch.compile"
