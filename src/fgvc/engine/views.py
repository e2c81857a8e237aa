"""Test-time views (``--tta``): the views of a prepared batch and a model averaged over them, each view's
probabilities at the model's temperature (see :mod:`fgvc.engine.ensemble` for the schemes)."""

from __future__ import annotations

from collections.abc import Iterator

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..models.output import ModelOutput
from .calibration import scaled_probabilities

__all__ = ["TTA_SCHEMES", "CROP_FRACTION", "WITHOUT_TTA", "UNCALIBRATED", "check_tta", "view_count", "crop_boxes",
           "tta_views", "ViewAveraged", "with_views"]

TTA_SCHEMES = ("none", "flip", "flip+crops")
CROP_FRACTION = 7 / 8  # side of the five crops of ``flip+crops``, as a fraction of the input's
WITHOUT_TTA = "without_tta"  # branch of a view-averaged model's output: the logits of the unchanged view
UNCALIBRATED = "uncalibrated"  # branch of a view-averaged model's output: log of the mean at temperature 1
_VIEWS = {"none": 1, "flip": 2, "flip+crops": 7}


# -- views --------------------------------------------------------------------------------------

def check_tta(scheme: str) -> str:
    if scheme not in TTA_SCHEMES:
        raise ConfigError(f"--tta {scheme!r} is not a view scheme; use one of: {', '.join(TTA_SCHEMES)}")
    return scheme


def view_count(scheme: str) -> int:
    return _VIEWS[check_tta(scheme)]


def crop_boxes(height: int, width: int, fraction: float = CROP_FRACTION) -> list[tuple[int, int, int, int]]:
    """``(top, left, height, width)`` of the centre crop and the four corner crops."""
    ch, cw = max(1, round(height * fraction)), max(1, round(width * fraction))
    bottom, right = height - ch, width - cw
    return [(bottom // 2, right // 2, ch, cw), (0, 0, ch, cw), (0, right, ch, cw), (bottom, 0, ch, cw),
            (bottom, right, ch, cw)]


def tta_views(x: Tensor, scheme: str) -> Iterator[Tensor]:
    """The views of a prepared batch ``(B, C, H, W)``, the unchanged batch first; made one at a time
    so that only one extra view is in memory."""
    yield x
    if check_tta(scheme) == "none":
        return
    yield x.flip(-1)
    if scheme == "flip+crops":
        h, w = x.shape[-2:]
        for top, left, ch, cw in crop_boxes(h, w):
            crop = x[..., top:top + ch, left:left + cw]
            yield F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)


class ViewAveraged(nn.Module):
    """``model`` whose prediction is its mean class probability over the views of its input, each view's
    at ``temperature`` (``softmax(logits / T)``).

    ``logits`` are the log of that mean (their softmax is the mean itself, and argmax/top-k are
    unchanged), ``branch_logits`` holds the unchanged view's logits as :data:`WITHOUT_TTA` (what the
    model alone would say, for free) and the log of the mean at T = 1 as :data:`UNCALIBRATED`,
    ``object_boxes`` are the unchanged view's."""

    def __init__(self, model: nn.Module, scheme: str, temperature: float = 1.0) -> None:
        super().__init__()
        self.model, self.scheme, self.temperature = model, check_tta(scheme), temperature

    def forward(self, x: Tensor) -> ModelOutput:
        first: ModelOutput | None = None
        total: Tensor | None = None
        total_raw: Tensor | None = None
        for view in tta_views(x, self.scheme):
            out = self.model(view)
            probabilities = scaled_probabilities(out.logits, self.temperature)
            raw = scaled_probabilities(out.logits)
            total = probabilities if total is None else total + probabilities
            total_raw = raw if total_raw is None else total_raw + raw
            first = out if first is None else first
        assert first is not None and total is not None and total_raw is not None
        views = view_count(self.scheme)
        return ModelOutput(logits=(total / views).log(), object_boxes=first.object_boxes,
                           branch_logits={WITHOUT_TTA: first.logits.float(), UNCALIBRATED: (total_raw / views).log()})


def with_views(model: nn.Module, scheme: str, temperature: float = 1.0) -> nn.Module:
    """``model`` itself without views (``none``: outputs exactly as before; the caller applies the
    temperature), else :class:`ViewAveraged` at ``temperature``."""
    return model if check_tta(scheme) == "none" else ViewAveraged(model, scheme, temperature)
