"""Backbones split into the three stages FGVC heads hook into (strides 8, 16, 32).

FBSD inserts a module between stages (the suppressed map feeds the next stage) and MMAL-Net
needs the output of the last stage *and* of the block before it (REFERENCE §2.2 ``conv5_b``).
A :class:`Backbone` therefore keeps the original network (``body``, so state-dict keys are
torchvision's or timm's with a ``body.`` prefix) plus an ordered list of *units* — submodules
run one after another — and the unit index where each stage ends.

Pretrained weights: ``pretrained=True`` takes the torchvision weights enum (ResNets:
``IMAGENET1K_V1``, the file the papers used), downloading to the torch cache when there is
internet; ``pretrained="path/to/file.pth"`` loads a local state dict (torchvision key names, an
optional ``module.`` prefix is removed). Without internet and without a file, the error says
exactly which file to put where.
"""

from __future__ import annotations

import urllib.error
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

from ..errors import ConfigError, FgvcError
from .registry import BackboneSpec, backbone_spec, register_backbone

__all__ = [
    "Backbone",
    "PretrainedWeightsError",
    "create_backbone",
    "load_state_dict_file",
    "strip_data_parallel",
]

Pretrained = bool | str | Path | None


class PretrainedWeightsError(FgvcError):
    """Weights could not be found or do not fit the architecture."""


class Backbone(nn.Module):
    """A CNN run unit by unit. ``units[i]`` is a tuple of qualified submodule names of ``body``."""

    def __init__(
        self,
        body: nn.Module,
        units: Sequence[Sequence[str]],
        stage_ends: tuple[int, int, int],
        channels: tuple[int, int, int],
        name: str,
    ) -> None:
        super().__init__()
        if not 0 < stage_ends[0] < stage_ends[1] < stage_ends[2] <= len(units):
            raise ValueError(f"stage ends {stage_ends} do not split {len(units)} units into three stages")
        self.body = body
        self.name = name
        self.channels = tuple(channels)
        self.strides = (8, 16, 32)
        self.stage_ends = tuple(stage_ends)
        self.unit_names = [tuple(unit) for unit in units]
        # the stride-32 map leaves through this one module, so attribution (Grad-CAM) has a layer to
        # hook whatever the network inside; no parameters, so state dicts are unchanged
        self.features_out = nn.Identity()
        self.refresh_units()

    def refresh_units(self) -> None:
        """Look the unit modules up again (after a submodule of ``body`` was replaced, e.g. by
        BatchNorm folding). A plain list, not registered: the modules live once, under ``body``."""
        self._units = [[self.body.get_submodule(n) for n in unit] for unit in self.unit_names]

    def _run(self, x: Tensor, start: int, end: int) -> Tensor:
        for unit in self._units[start:end]:
            for module in unit:
                x = module(x)
        return x

    def stage(self, i: int, x: Tensor) -> Tensor:
        """Run stage ``i`` (0: image -> stride 8, 1: -> stride 16, 2: -> stride 32)."""
        start = 0 if i == 0 else self.stage_ends[i - 1]
        x = self._run(x, start, self.stage_ends[i])
        return self.features_out(x) if i == 2 else x

    def forward(self, x: Tensor) -> list[Tensor]:
        """Feature maps at strides 8, 16 and 32."""
        feats = []
        for i in range(3):
            x = self.stage(i, x)
            feats.append(x)
        return feats

    def forward_last_two(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(output of the last stage without its last unit, output of the last stage) — MMAL's
        ``conv5_b`` and ``conv5_c`` on a ResNet. A last stage of one unit gives its output twice."""
        x = self.stage(1, self.stage(0, x))
        if self.stage_ends[2] - self.stage_ends[1] < 2:  # one opaque unit: no block before the last
            x = self.stage(2, x)
            return x, x
        penultimate = self._run(x, self.stage_ends[1], self.stage_ends[2] - 1)
        return penultimate, self.features_out(self._run(penultimate, self.stage_ends[2] - 1, self.stage_ends[2]))


# -- weights ------------------------------------------------------------------------------------

def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """A state dict from a file, never executing code (``weights_only=True``); unwraps
    ``{"state_dict": ...}`` / ``{"model": ...}`` and removes a DataParallel ``module.`` prefix."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PretrainedWeightsError(f"weights file {path} not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is the same story for the user
        raise PretrainedWeightsError(f"cannot read weights file {path}: {e}") from None
    for key in ("state_dict", "model"):
        if isinstance(data, Mapping) and key in data and isinstance(data[key], Mapping):
            data = data[key]
    if not isinstance(data, Mapping):
        raise PretrainedWeightsError(f"{path} holds a {type(data).__name__}, not a state dict")
    return strip_data_parallel(dict(data))


def strip_data_parallel(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict saved from a ``DataParallel``/``DistributedDataParallel`` wrapper without its ``module.``
    prefix (only when every key has it)."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def _load_into(body: nn.Module, state: Mapping[str, Tensor], source: str, ignore_prefixes: Sequence[str]) -> None:
    """Strict load except for the classifier keys the backbone drops (e.g. ``fc.``)."""
    state = {k: v for k, v in state.items() if not k.startswith(tuple(ignore_prefixes))}
    own = body.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        def head(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")

        lines = [f"weights from {source} do not fit this backbone:"]
        if missing:
            lines.append(f"  {len(missing)} missing key(s): {head(missing)}")
        if unexpected:
            lines.append(f"  {len(unexpected)} unexpected key(s): {head(unexpected)}")
        if wrong:
            lines.append(f"  {len(wrong)} shape mismatch(es): "
                         + head([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in wrong]))
        raise PretrainedWeightsError("\n".join(lines))
    body.load_state_dict(state, strict=True)


def _download_weights(weights: torchvision.models.WeightsEnum) -> dict[str, Tensor]:
    url = weights.url
    target = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    try:
        return weights.get_state_dict(progress=True, check_hash=False)
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        raise PretrainedWeightsError(
            f"cannot download the {weights} weights ({e}).\nWithout internet, download\n  {url}\n"
            f"elsewhere and place it at\n  {target}\nor pass pretrained='path/to/{target.name}'."
        ) from None


# -- builders -----------------------------------------------------------------------------------

_RESNETS = {
    "resnet18": ("resnet18", "ResNet18_Weights", (128, 256, 512)),
    "resnet34": ("resnet34", "ResNet34_Weights", (128, 256, 512)),
    "resnet50": ("resnet50", "ResNet50_Weights", (512, 1024, 2048)),
    "resnet101": ("resnet101", "ResNet101_Weights", (512, 1024, 2048)),
}


def _resnet(name: str, pretrained: Pretrained) -> Backbone:
    builder, weights_name, channels = _RESNETS[name]
    net = getattr(torchvision.models, builder)(weights=None)
    del net.fc, net.avgpool  # heads are the models' own (REFERENCE F10: the reference drops fc silently)
    if pretrained:
        if isinstance(pretrained, str | Path) and str(pretrained) not in ("imagenet", "torchvision", "true"):
            state, source = load_state_dict_file(pretrained), str(pretrained)
        else:
            weights = getattr(torchvision.models, weights_name).IMAGENET1K_V1
            state, source = _download_weights(weights), str(weights)
        _load_into(net, state, source, ignore_prefixes=("fc.",))
    last = [f"layer4.{i}" for i in range(len(net.layer4))]
    units = [("conv1",), ("bn1",), ("relu",), ("maxpool",), ("layer1",), ("layer2",), ("layer3",)]
    units += [(u,) for u in last]
    return Backbone(net, units, (6, 7, 7 + len(last)), channels, name)


def _timm(name: str, pretrained: Pretrained) -> Backbone:
    try:
        import timm
    except ImportError:
        raise ConfigError(f"model.backbone: {name!r} needs timm: pip install 'fgvc[timm]'") from None
    model_name = name.removeprefix("timm/")
    file = None if isinstance(pretrained, bool) or pretrained is None else pretrained
    net = timm.create_model(model_name, pretrained=bool(pretrained) and file is None, features_only=True)
    if file is not None:
        _load_into(net, load_state_dict_file(file), str(file), ignore_prefixes=())
    info = net.feature_info
    reductions = info.reduction()
    feature_names = [info.module_name(i) for i in range(len(reductions))]
    # Flatten to modules that run one after another; expand a Sequential that a feature lies inside.
    units: list[str] = []
    for child_name, child in net.named_children():
        if isinstance(child, nn.Sequential) and any(f.startswith(child_name + ".") for f in feature_names):
            units += [f"{child_name}.{i}" for i in range(len(child))]
        else:
            units.append(child_name)

    def unit_index(module_name: str) -> int:
        for candidate in (module_name, module_name.replace(".", "_")):
            if candidate in units:
                return units.index(candidate)
        raise ConfigError(f"model.backbone: timm model {model_name!r}: cannot locate feature module "
                          f"{module_name!r} in {units}")

    ends, channels = [], []
    for stride in (8, 16, 32):
        if stride not in reductions:
            raise ConfigError(f"model.backbone: timm model {model_name!r} has no stride-{stride} feature map "
                              f"(has {reductions})")
        i = reductions.index(stride)
        ends.append(unit_index(feature_names[i]) + 1)
        channels.append(info.channels(i))
    units = units[: ends[2]]
    last = net.get_submodule(units[-1])
    if isinstance(last, nn.Sequential) and len(last) > 1:  # MMAL needs the block before the last
        units[-1:] = [f"{units[-1]}.{i}" for i in range(len(last))]
        ends[2] = len(units)
    return Backbone(net, [(u,) for u in units], tuple(ends), tuple(channels), name)


def _timm_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The timm weights' mean/std from timm's pretrained config, without building the network; no
    config (or no timm) is an error, not a guess."""
    try:
        import timm
    except ImportError:
        raise ConfigError(f"model.backbone: {name!r} needs timm: pip install 'fgvc[timm]'") from None
    cfg = timm.get_pretrained_cfg(name.removeprefix("timm/"))
    cfg = cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else (cfg or {})
    if "mean" not in cfg or "std" not in cfg:
        raise ConfigError(f"model.backbone: timm has no pretrained config (mean/std) for {name!r}; "
                          "pick a timm model with pretrained weights")
    return tuple(cfg["mean"]), tuple(cfg["std"])


for _name in _RESNETS:
    register_backbone(BackboneSpec(_name, lambda pretrained, _n=_name: _resnet(_n, pretrained)))
register_backbone(BackboneSpec("timm/", _timm, prefix=True, stats=_timm_stats))


def create_backbone(name: str, *, pretrained: Pretrained = False) -> Backbone:
    """Any registered backbone: ``resnet18/34/50/101``, ``efficientnet_lite0``, ``timm/<any CNN>``."""
    spec = backbone_spec(name)
    return spec.builder(name, pretrained) if spec.prefix else spec.builder(pretrained)
