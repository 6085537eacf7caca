"""An LPIPS-like perceptual loss on the features of any frozen network, loaded offline only.

MONAI's perceptual networks (AlexNet, VGG, SqueezeNet, RadImageNet, MedicalNet) download their weights at run time
and fail without internet. Here the feature extractor is given: a network trained on the same dataset (e.g. the
encoder of the dataset's nnU-Net), a TorchScript file, or a state dict loaded ``weights_only`` into a given module.
Nothing is ever downloaded.
"""

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn


class FeaturePerceptualLoss(nn.Module):
    """``mean over layers of [ mean over voxels of sum_c (f_l(x) / |f_l(x)| - f_l(y) / |f_l(y)|)^2 ]``, per sample,
    averaged over the batch.

    The distance of LPIPS (Zhang et al. 2018, eq. 1) with unit channel weights (their "baseline" variant, no learned
    linear layer): feature maps of x and y from a frozen network are normalised to unit length along the channels at
    every voxel, and their squared differences summed over channels, averaged over voxels and over layers. It is 0
    for ``x == y``, works in 2D and 3D alike (the dimension is the extractor's), and lets gradients flow to ``x``
    while the extractor itself is frozen (``requires_grad_(False)``, kept in eval mode even when the loss is put in
    training mode, so that BatchNorm statistics and dropout stay fixed). The module passed in is frozen in place.

    Args:
        feature_extractor: a network ``(B, C, *S) -> features``. Without ``layers`` its output is used: a tensor or
            a list / tuple of tensors (an nnU-Net encoder returns one per stage); with ``layers`` the outputs of the
            named submodules (``dict(feature_extractor.named_modules())`` keys) are captured by forward hooks.
        layers: names of submodules whose outputs are compared; default None (the extractor's output).
        preprocess: optional map applied to x and y first, e.g. back from the autoencoder's [-1, 1] range to the
            intensities the extractor was trained on, or a channel selection.
        eps: added under the square root of the channel norm (keeps zero features differentiable).
    """

    def __init__(
        self,
        feature_extractor: nn.Module,
        layers: Sequence[str] | None = None,
        preprocess: Callable[[Tensor], Tensor] | None = None,
        eps: float = 1e-10,
    ) -> None:
        super().__init__()
        self.feature_extractor = feature_extractor.eval()
        for parameter in feature_extractor.parameters():  # not requires_grad_(): ScriptModules lack it
            parameter.requires_grad_(False)
        self.layers = tuple(layers or ())
        self.preprocess = preprocess
        self.eps = eps
        self._captured: dict[str, Tensor] = {}
        if self.layers:
            modules = dict(feature_extractor.named_modules())
            missing = [name for name in self.layers if name not in modules]
            if missing:
                known = ", ".join(name for name in list(modules)[1:20] if name)
                raise ValueError(f"feature extractor has no submodule(s) {missing}; known names include: {known}")
            for name in self.layers:
                modules[name].register_forward_hook(self._capture(name))

    @classmethod
    def from_torchscript(
        cls, path: str | Path, preprocess: Callable[[Tensor], Tensor] | None = None
    ) -> "FeaturePerceptualLoss":
        """Load a TorchScript module saved with ``torch.jit.save``; its ``forward`` must return the feature maps (a
        tensor or a list / tuple of tensors). TorchScript runs serialized code in the TorchScript interpreter: load
        only files from a source you trust. ``torch.jit.load`` is deprecated from torch 2.10 and warns."""
        file = _existing_file(path, "a TorchScript feature extractor (torch.jit.save(torch.jit.script(net), path))")
        try:
            module = torch.jit.load(str(file), map_location="cpu")
        except RuntimeError as e:
            raise ValueError(
                f"{file} is not a TorchScript archive ({str(e).splitlines()[0]}); save the feature extractor with "
                "torch.jit.save(torch.jit.script(net), path), or use from_state_dict for a state dict"
            ) from None
        return cls(module, preprocess=preprocess)

    @classmethod
    def from_state_dict(
        cls,
        path: str | Path,
        module: nn.Module,
        layers: Sequence[str] | None = None,
        preprocess: Callable[[Tensor], Tensor] | None = None,
    ) -> "FeaturePerceptualLoss":
        """Load the weights at ``path`` into ``module`` (strictly) and use it as the feature extractor.

        The file is read with ``torch.load(path, weights_only=True)``: only tensors and plain containers, never
        pickled code; a file that needs unsafe unpickling is refused with a ValueError. It holds a state dict, or a
        dict with one under ``"state_dict"`` or ``"network_weights"`` (nnU-Net's checkpoint key).
        """
        file = _existing_file(path, "a state dict saved with torch.save(net.state_dict(), path)")
        try:
            loaded = torch.load(file, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise ValueError(
                f"refused to load {file}: it is not a weights-only file, and unpickling it would be unsafe (it could "
                "run arbitrary code). Save only tensors, torch.save(net.state_dict(), path). "
                f"({str(e).splitlines()[0]})"
            ) from None
        except RuntimeError as e:
            raise ValueError(f"cannot read {file} as a torch file: {str(e).splitlines()[0]}") from None
        state = _state_dict_of(loaded, file)
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"weights in {file} do not fit the given module: {e}") from None
        return cls(module, layers=layers, preprocess=preprocess)

    def train(self, mode: bool = True) -> "FeaturePerceptualLoss":
        """Set the mode of the loss; the frozen extractor stays in eval mode."""
        super().train(mode)
        self.feature_extractor.eval()
        return self

    def features(self, x: Tensor) -> list[Tensor]:
        """Feature maps of ``x`` compared by the loss, one per layer."""
        if self.preprocess is not None:
            x = self.preprocess(x)
        self._captured.clear()
        out = self.feature_extractor(x)
        if self.layers:
            found = [self._captured.get(name) for name in self.layers]
            self._captured.clear()
            if any(f is None for f in found):
                raise RuntimeError(f"layers {self.layers} did not all run in the feature extractor's forward")
            return [f for f in found if f is not None]
        maps = [out] if isinstance(out, Tensor) else list(out)
        if not maps or not all(isinstance(m, Tensor) for m in maps):
            raise TypeError("the feature extractor must return a tensor or a list / tuple of tensors")
        return maps

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """Perceptual distance between ``x`` and ``y`` (both ``(B, C, *S)``): a scalar, averaged over the batch."""
        if x.shape != y.shape:
            raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must have the same shape")
        batch = x.shape[0]
        both = self.features(torch.cat([x, y], dim=0))  # one pass: BatchNorm is in eval mode, so this is exact
        total = x.new_zeros(batch, dtype=torch.float32)
        for f in both:
            fx, fy = self._unit(f[:batch]), self._unit(f[batch:])
            total = total + (fx - fy).pow(2).sum(dim=1).flatten(1).mean(dim=1)
        return (total / len(both)).mean()

    def _unit(self, f: Tensor) -> Tensor:
        f = f.float()
        return f * torch.rsqrt(f.pow(2).sum(dim=1, keepdim=True) + self.eps)

    def _capture(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: object, output: Tensor) -> None:
            self._captured[name] = output

        return hook


def _existing_file(path: str | Path, what: str) -> Path:
    file = Path(path).expanduser()
    if not file.is_file():
        raise ValueError(
            f"perceptual network weights not found at {file}: provide {what} at that path (set "
            "autoencoder.perceptual_network in the plans), or set autoencoder.perceptual_weight to 0 to train without "
            "a perceptual loss; nnugen never downloads weights"
        )
    return file


def _state_dict_of(loaded: object, file: Path) -> dict[str, Tensor]:
    if isinstance(loaded, dict):
        for key in ("state_dict", "network_weights"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise ValueError(
            f"{file} holds no state dict (a dict of tensors, possibly under 'state_dict' or 'network_weights'); "
            "save one with torch.save(net.state_dict(), path)"
        )
    return loaded
