"""ModelOutput: the one thing every model's ``forward`` returns, so the trainer knows no model."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["ModelOutput", "LossTerms", "TrainPass"]

LossTerms = dict[str, Tensor]


@dataclass
class ModelOutput:
    """``logits`` drive prediction; the rest is for losses, metrics and pictures.

    ``object_boxes`` (B, 4) and ``part_boxes`` (B, N, 4) are in input-pixel coordinates as
    ``(x0, y0, x1, y1)``, x = column, **inclusive** pixel indices (the reference's convention).
    ``extras`` holds per-model tensors worth logging or drawing (e.g. FBSM strip importances).
    """

    logits: Tensor
    branch_logits: dict[str, Tensor] = field(default_factory=dict)
    object_boxes: Tensor | None = None
    part_boxes: Tensor | None = None
    extras: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class TrainPass:
    """One forward/backward of a training iteration (see ``ModelSpec.train_passes``).

    The trainer back-propagates ``loss`` as soon as the pass is yielded; with ``step`` it then steps the
    optimiser (and zeroes the gradients) before asking for the next pass, so the next pass sees the updated
    weights — PMG's four steps per batch. A model whose iteration is one forward and one loss needs none of this.
    """

    output: ModelOutput
    loss: Tensor
    terms: LossTerms
    step: bool = False
