"""What a model and a backbone *are*, declared once where they are defined (like timm's
``pretrained_cfg``), so the engine, ``explain`` and ``report`` ask the spec instead of naming models.

A model module ends with ``register_model(ModelSpec(...))``; a backbone module with
``register_backbone(BackboneSpec(...))``. A test (or a user's plug-in) registers its own the same
way and the whole workflow — train, evaluate, predict, explain, report — takes it without edits.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from torch import nn

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..errors import ConfigError
from .output import TrainPass

__all__ = [
    "Picture",
    "AuthorsLayout",
    "TrainPasses",
    "PICTURE_EXTRAS",
    "ModelSpec",
    "BackboneSpec",
    "MODEL_REGISTRY",
    "BACKBONE_REGISTRY",
    "register_model",
    "register_backbone",
    "model_spec",
    "backbone_spec",
    "split_backbone_parameters",
]

ParamGroups = Callable[[nn.Module], dict[str, list[nn.Parameter]]]
TrainPasses = Callable[[nn.Module, Callable[..., Any], Any, Any, int], Iterator[TrainPass]]
"""``(model, forward, x, y, epoch) -> passes``: ``forward`` is what to call (the DDP or compiled wrapper of
``model``); ``model`` is the plain module (its ``loss``, its state such as CAL's feature centres)."""


@dataclass(frozen=True)
class AuthorsLayout:
    """How the authors' own released checkpoint names this model's tensors, for ``fgvc convert``.

    ``repository`` is where the checkpoint comes from (owner/name); ``rename(key)`` maps one of the authors'
    state-dict keys to fgvc's key, returns None for a tensor the authors keep that fgvc does not (said in
    ``dropped``, the documented reason) and raises ``KeyError`` for a key it does not know (an extra key).
    ``container`` says how the file wraps the tensors: ``"state_dict"`` (a plain mapping), ``"state_dict_key"``
    (a dict whose ``"state_dict"`` or ``"model_state_dict"`` entry is the mapping — CAL's and MMAL-Net's files;
    its other entries are read as plain data) or ``"pickled_module"`` (``torch.save(model)``: read by a
    restricted unpickler that rebuilds tensors and plain containers only). ``buffers`` maps a top-level entry of
    the file (CAL's
    ``feature_center``) to an fgvc state-dict key.
    """

    repository: str
    rename: Callable[[str], str | None]
    container: str = "state_dict"
    dropped: str = ""
    buffers: Mapping[str, str] = field(default_factory=dict)


def split_backbone_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """``"new"`` (everything the model adds) and ``"backbone"`` (``model.backbone``'s parameters)."""
    backbone = list(model.backbone.parameters())  # type: ignore[union-attr]
    ids = {id(p) for p in backbone}
    return {"new": [p for p in model.parameters() if id(p) not in ids], "backbone": backbone}


class Picture(str, Enum):
    """What ``fgvc explain`` draws for a model beyond the input and its top-5 (see :class:`ModelSpec`)."""

    WINDOWS = "windows"  # the object box and the part windows (``object_boxes``, ``part_boxes``)
    STRIPS = "strips"  # per stage, the strip importances over the input and the stage's activation
    HEATMAPS = "heatmaps"  # named maps over the input (``heatmapN``, titled by the spec's ``heatmap_titles``)


# the ``extras`` keys each picture reads; a trailing ``N`` stands for the stage number (1, 2, ...)
PICTURE_EXTRAS: dict[Picture, tuple[str, ...]] = {
    Picture.WINDOWS: ("window_group_sizes",),
    Picture.STRIPS: ("strip_importanceN", "stage_mapN", "strip_edgesN", "stage_strideN"),
    Picture.HEATMAPS: ("heatmapN",),
}


@dataclass(frozen=True)
class ModelSpec:
    """A model's recipe and capabilities.

    ``builder(backbone, num_classes, **options)`` makes the model; its ``forward(x)`` returns a
    :class:`~fgvc.models.output.ModelOutput` and ``loss(output, target, epoch)`` the total and named
    terms, with ``epoch=None`` meaning "the full loss" (evaluation). ``head_prefixes`` are the
    state-dict prefixes of the class-dependent layers (re-initialised on transfer). ``param_groups``
    splits parameters for ``optim.backbone_lr`` (default: ``model.backbone`` and the rest; None: one
    group). ``warmup_epochs(model)`` is how many first epochs train only some branches (announced by
    the trainer). ``extras`` declares the keys of ``ModelOutput.extras`` the model emits (from ``forward``
    or ``explain_forward``; a trailing ``N`` for a numbered family, ``strip_importanceN``). ``step_stats`` maps
    a declared ``extras`` key (one value per image) to the name its per-epoch sum is logged under.
    ``pictures`` names what ``fgvc explain`` can draw (:class:`Picture`): ``WINDOWS`` (``object_boxes`` and
    ``part_boxes``), ``STRIPS`` (``extras["strip_importanceN"]`` with ``stage_mapN``), each with the extras
    keys of :data:`PICTURE_EXTRAS` declared; ``HEATMAPS`` draws ``extras["heatmapN"]`` (B, h, w) over the input,
    titled by ``heatmap_titles`` (one per map). A spec that breaks this fails when it is made, one line naming the
    spec and the key (a typo otherwise gives a plain picture or an empty statistic, silently). The input
    image and the top-5 are drawn for every model, and for a model with no picture of its own a
    Grad-CAM heatmap at ``cam_layer(model)`` (default: the backbone's stride-32 output; None: none).
    ``explain_forward(model, x)`` is the forward that
    returns everything the pictures need (default: ``model(x)``).
    ``train_passes`` (None: one pass, ``forward(x)`` then ``model.loss``) is a model's training iteration when it
    is more than one forward and one loss: a generator of :class:`~fgvc.models.output.TrainPass` (PMG: four
    passes on jigsaw-shuffled inputs, each stepping the optimiser; CAL: one pass whose loss needs a second
    forward on the attention-cropped and -dropped images). The last pass's output is the one scored for the
    training accuracy and ``step_stats``. ``authors_layout``: how the authors' checkpoints name the tensors.
    """

    name: str
    builder: Callable[..., nn.Module]
    head_prefixes: tuple[str, ...]
    default_transform: str = "plain"
    default_input_size: int = 224
    param_groups: ParamGroups | None = split_backbone_parameters
    warmup_epochs: Callable[[nn.Module], int] = lambda model: 0
    step_stats: Mapping[str, str] = field(default_factory=dict)
    pictures: tuple[Picture, ...] = ()
    extras: tuple[str, ...] = ()
    explain_forward: Callable[[nn.Module, Any], Any] | None = None
    localises: bool = False  # ModelOutput.object_boxes is an object box: localisation metrics apply
    cam_layer: Callable[[nn.Module], nn.Module | None] = lambda model: getattr(
        getattr(model, "backbone", None), "features_out", None)  # Grad-CAM's layer in explain pictures
    heatmap_titles: tuple[str, ...] = ()  # Picture.HEATMAPS: the title of heatmap1, heatmap2, ...
    train_passes: TrainPasses | None = None
    unused_parameters: bool = False  # a pass leaves some parameters without a gradient (DDP must look for them)
    input_size_option: str | None = None  # the builder keyword sized by the input (Run passes model.input_size)
    authors_layout: AuthorsLayout | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pictures", tuple(self._picture(p) for p in self.pictures))
        declared = ", ".join(self.extras) or "none"
        for key in self.step_stats:
            if key not in self.extras:
                raise ConfigError(f"model spec {self.name!r}: step_stats key {key!r} is not one of its declared "
                                  f"extras keys ({declared}); declare it in extras or fix the name")
        if Picture.HEATMAPS in self.pictures and not self.heatmap_titles:
            raise ConfigError(f"model spec {self.name!r}: picture 'heatmaps' needs heatmap_titles (one per heatmapN)")
        for picture in self.pictures:
            missing = [key for key in PICTURE_EXTRAS[picture] if key not in self.extras]
            if missing:
                raise ConfigError(f"model spec {self.name!r}: picture {picture.value!r} reads extras "
                                  f"{', '.join(missing)}, which the spec does not declare (declared: {declared})")

    def _picture(self, value: Picture | str) -> Picture:
        try:
            return Picture(value)
        except ValueError:
            valid = ", ".join(p.value for p in Picture)
            raise ConfigError(f"model spec {self.name!r}: pictures: {value!r} is not a picture fgvc draws; "
                              f"valid: {valid}") from None


@dataclass(frozen=True)
class BackboneSpec:
    """``builder(pretrained)`` returns a :class:`~fgvc.models.backbones.Backbone`; ``mean``/``std``
    are the statistics its weights were trained with (the ``plain`` transform normalises with them; the
    one place fgvc reads a backbone's statistics — ImageNet's unless the spec says otherwise).
    A spec with ``prefix=True`` serves every name that starts with ``name`` (``timm/<model>``) and its
    builder takes ``(full_name, pretrained)``."""

    name: str
    builder: Callable[..., nn.Module]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    prefix: bool = False
    stats: Callable[[str], tuple[tuple[float, ...], tuple[float, ...]]] | None = None


MODEL_REGISTRY: dict[str, ModelSpec] = {}
BACKBONE_REGISTRY: dict[str, BackboneSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    MODEL_REGISTRY[spec.name] = spec
    return spec


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    BACKBONE_REGISTRY[spec.name] = spec
    return spec


def _unknown(kind: str, name: str, known: list[str], key: str) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"{key}: unknown {kind} {name!r}; known: {', '.join(known)}.{hint}")


def model_spec(name: str) -> ModelSpec:
    if name not in MODEL_REGISTRY:
        raise _unknown("model", name, sorted(MODEL_REGISTRY), "model.name")
    return MODEL_REGISTRY[name]


def backbone_spec(name: str) -> BackboneSpec:
    if name in BACKBONE_REGISTRY and not BACKBONE_REGISTRY[name].prefix:
        return BACKBONE_REGISTRY[name]
    for spec in BACKBONE_REGISTRY.values():
        if spec.prefix and name.startswith(spec.name):
            return spec
    known = sorted(s.name + ("<name>" if s.prefix else "") for s in BACKBONE_REGISTRY.values())
    raise _unknown("backbone", name, known, "model.backbone")


def backbone_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean/std of the named backbone's weights, without building it (an unknown backbone is a
    :class:`ConfigError`, never a fallback)."""
    spec = backbone_spec(name)
    return spec.stats(name) if spec.stats is not None else (spec.mean, spec.std)
