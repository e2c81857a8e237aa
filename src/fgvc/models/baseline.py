"""The plain baseline: backbone -> global average pooling -> dropout -> linear."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import Backbone
from .output import LossTerms, ModelOutput
from .registry import ModelSpec, register_model

__all__ = ["Baseline"]


class Baseline(nn.Module):
    def __init__(self, backbone: Backbone, num_classes: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(backbone.channels[2], num_classes)

    def forward(self, x: Tensor) -> ModelOutput:
        feats = self.backbone(x)[2].mean(dim=(2, 3))
        logits = self.classifier(self.dropout(feats))
        return ModelOutput(logits=logits, branch_logits={"main": logits})

    def loss(self, output: ModelOutput, target: Tensor, epoch: int | None = None) -> tuple[Tensor, LossTerms]:
        ce = F.cross_entropy(output.logits, target)
        return ce, {"ce_main": ce}


register_model(ModelSpec("baseline", Baseline, head_prefixes=("classifier.",), default_transform="plain"))
