"""Models and backbones, found by name in the registry (:mod:`fgvc.models.registry`).

``create_model(name, num_classes, backbone=..., pretrained=..., **options)`` builds any registered
model on any registered backbone. Every model's ``forward(x)`` returns a :class:`ModelOutput` and
its ``loss(output, target, epoch)`` returns ``(total, named terms)``; what else the workflow needs
to know about a model (head prefixes, parameter groups, default transform, pictures) is its
:class:`ModelSpec`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ConfigError
from . import baseline, cal, efficientnet_lite, fbsd, mmal, pim, pmg, swin, transfg  # noqa: F401  (each registers itself)
from .backbones import Backbone, create_backbone
from .output import ModelOutput
from .registry import (
    BACKBONE_REGISTRY,
    MODEL_REGISTRY,
    BackboneSpec,
    ModelSpec,
    backbone_spec,
    backbone_stats,
    model_spec,
    register_backbone,
    register_model,
)

__all__ = [
    "MODEL_REGISTRY",
    "BACKBONE_REGISTRY",
    "ModelSpec",
    "BackboneSpec",
    "register_model",
    "register_backbone",
    "model_spec",
    "backbone_spec",
    "backbone_stats",
    "create_model",
    "ModelOutput",
    "Backbone",
    "create_backbone",
]


def create_model(
    name: str, num_classes: int, *, backbone: str = "resnet50", pretrained: bool | str = False, **options: Any
) -> nn.Module:
    spec = model_spec(name)
    if num_classes < 2:
        raise ConfigError(f"num_classes must be at least 2, got {num_classes}")
    try:
        return spec.builder(create_backbone(backbone, pretrained=pretrained), num_classes, **options)
    except TypeError as e:
        if "unexpected keyword argument" in str(e):
            raise ConfigError(f"model.options: {name} does not take {str(e).rsplit(' ', 1)[-1]} ({e})") from None
        raise
