"""Model registry: ``create_model(name, num_classes, backbone=..., pretrained=..., **recipe)``.

Every model's ``forward(x)`` returns a :class:`ModelOutput` and its ``loss(output, target,
epoch)`` returns ``(total, named terms)``; heads it adds on top of the backbone are listed by
``head_prefixes`` so transfer learning knows what to re-initialise.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from torch import nn

from .backbones import Backbone, create_backbone
from .baseline import Baseline
from .fbsd import FBSD
from .mmal import MMALNet
from .output import ModelOutput

__all__ = ["MODELS", "HEAD_PREFIXES", "create_model", "ModelOutput", "Backbone", "create_backbone"]

MODELS: dict[str, Callable[..., nn.Module]] = {"baseline": Baseline, "fbsd": FBSD, "mmal": MMALNet}

# State-dict prefixes of the class-dependent layers, per model (re-initialised on transfer).
HEAD_PREFIXES: dict[str, tuple[str, ...]] = {
    "baseline": ("classifier.",),
    "fbsd": ("heads.", "head_concat."),
    "mmal": ("classifier.",),
}


def create_model(
    name: str, num_classes: int, *, backbone: str = "resnet50", pretrained: bool | str = False, **recipe: Any
) -> nn.Module:
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}.{hint}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    return MODELS[name](create_backbone(backbone, pretrained=pretrained), num_classes, **recipe)
