"""Box geometry: IoU, and boxes moved between the original image, the model input and a picture.

Boxes are ``(x0, y0, x1, y1)``, x = column. Two conventions meet here:

* **inclusive** pixel indices (``ModelOutput`` boxes, MMAL-Net windows): pixel ``x1`` belongs to
  the box, so a box is ``x1 − x0 + 1`` px wide (REFERENCE M11);
* **exclusive** ends (``Sample.box_xyxy``, the dataset annotations in original-image pixels):
  the box covers ``[x0, x1)``.

Pixel i covers ``[i, i + 1)``; every mapping below keeps that picture. No drawing, no model code:
models, the metrics and the pictures all import from here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["box_iou_inclusive", "paired_iou_inclusive", "true_boxes_in_input", "scale_box"]

Box = Sequence[float]


def box_iou_inclusive(a: Tensor, b: Tensor) -> Tensor:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), inclusive pixels (+1 widths)."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt + 1).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2] + 1).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2] + 1).prod(dim=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


def paired_iou_inclusive(a: Tensor, b: Tensor) -> Tensor:
    """IoU of ``a[i]`` with ``b[i]`` for (N, 4) boxes, inclusive pixels."""
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt + 1).clamp(min=0).prod(dim=1)
    area = lambda t: (t[:, 2:] - t[:, :2] + 1).prod(dim=1)  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def true_boxes_in_input(boxes_xyxy, orig_sizes, input_size: tuple[int, int]) -> Tensor:
    """Annotated boxes (N, 4) in original pixels with exclusive ends (``Sample.box_xyxy``) on the
    model input of ``input_size`` = (h, w), inclusive ends: valid for the recipes that resize the
    whole image without cropping (mmal, plain). ``orig_sizes`` (N, 2) holds each image's
    (height, width). Returns a float64 tensor (N, 4), unrounded."""
    boxes = torch.as_tensor(boxes_xyxy, dtype=torch.float64).reshape(-1, 4)
    sizes = torch.as_tensor(orig_sizes, dtype=torch.float64).reshape(-1, 2)
    sy, sx = input_size[0] / sizes[:, 0], input_size[1] / sizes[:, 1]
    x0, y0, x1, y1 = boxes.unbind(1)
    return torch.stack([x0 * sx, y0 * sy, x1 * sx - 1, y1 * sy - 1], dim=1)


def scale_box(box: Box, sx: float, sy: float | None = None, *, inclusive: bool = True,
              offset: tuple[int, int] = (0, 0)) -> tuple[int, int, int, int]:
    """``box`` on a picture ``sx`` x ``sy`` times the size of its own, as an inclusive integer box
    shifted by ``offset`` (the picture's origin inside a larger canvas).

    Pixel i of the source covers ``[i, i + 1)``, so an inclusive end x1 becomes
    ``round((x1 + 1)·sx) − 1``; with ``inclusive=False`` (ends exclusive, as ``Sample.box_xyxy``)
    it becomes ``round(x1·sx) − 1``.
    """
    sy = sx if sy is None else sy
    x0, y0, x1, y1 = (float(v) for v in box)
    end = 1.0 if inclusive else 0.0
    ox, oy = offset
    return (round(x0 * sx) + ox, round(y0 * sy) + oy, round((x1 + end) * sx) - 1 + ox,
            round((y1 + end) * sy) - 1 + oy)
