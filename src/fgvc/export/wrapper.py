"""The module that gets exported: the run's inference model with plain tensor outputs.

Exporters and runtimes take tensors, not :class:`~fgvc.models.output.ModelOutput`. The wrapper runs
the model's eval forward — exactly what ``fgvc predict`` runs — and returns ``logits`` and, for a
model whose spec says it localises, ``object_boxes`` (inclusive input pixels). Whatever else the
eval forward computes (branch logits, extras) is dropped; what only ``fgvc explain`` computes
(e.g. part windows, stage maps) is not in the eval forward at all.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["PlainOutputs", "output_names"]


def output_names(localises: bool) -> tuple[str, ...]:
    return ("logits", "object_boxes") if localises else ("logits",)


class PlainOutputs(nn.Module):
    """``images`` (N, 3, S, S) normalised float -> ``(logits,)`` or ``(logits, object_boxes)``."""

    def __init__(self, model: nn.Module, localises: bool) -> None:
        super().__init__()
        self.model = model
        self.localises = localises

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        out = self.model(images)
        if not self.localises:
            return (out.logits,)
        if out.object_boxes is None:
            raise RuntimeError("the model spec says it localises, but its eval forward returned no object_boxes")
        return out.logits, out.object_boxes.to(torch.int64)
