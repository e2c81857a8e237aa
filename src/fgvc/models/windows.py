"""MMAL-Net window geometry: presets, window boxes, groups and their IoU tables.

A ratio ``(a, b)`` is a window of ``a`` rows x ``b`` columns of feature-map cells. Presets are
the authors' tables, defined on the 14x14 map of a 448-px input (REFERENCE §2.1). For another
map size the cell counts scale with the map (``round(a * H / 14)``, at least 1, at most H), so a
window keeps its share of the object image; at 448 px this is exactly the reference.

Boxes here are ``(x0, y0, x1, y1)`` with x = column and **inclusive** pixel indices, computed with
the reference's rule (``32·row − 1`` clamped at 0, end ``32·row − 1 + 32·a``): a window starting
at cell 0 is ``32a`` px tall, any other ``32a + 1`` (REFERENCE §2.5). The index order within a
ratio is the row-major output order of ``AvgPool2d((a, b), stride=1)``; groups are concatenated
in preset order, so no ``window_nums_sum`` needs maintaining by hand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from ..errors import ConfigError
from ..ops.boxes import box_iou_inclusive

__all__ = ["WindowPreset", "WindowGeometry", "WINDOW_PRESETS"]

Ratio = tuple[int, int]


@dataclass(frozen=True)
class WindowPreset:
    """Ratio groups, windows picked per group (N_list) and NMS IoU thresholds."""

    groups: tuple[tuple[Ratio, ...], ...]
    picks: tuple[int, ...]
    iou_thresholds: tuple[float, ...]
    reference_map: int = 14

    def __post_init__(self) -> None:
        if not len(self.groups) == len(self.picks) == len(self.iou_thresholds):
            raise ConfigError("model.options.windows: a window preset needs one pick count and one IoU threshold "
                              "per group")

    @property
    def num_parts(self) -> int:
        return sum(self.picks)

    @classmethod
    def from_dict(cls, data: dict) -> WindowPreset:
        """A user-defined preset, e.g. from YAML: ``{"groups": [[[4, 4], [3, 5]], ...], "picks": [2, ...],
        "iou_thresholds": [0.25, ...]}`` (ratios as rows x columns of cells on a 14x14 map)."""
        try:
            groups = tuple(tuple((int(a), int(b)) for a, b in group) for group in data["groups"])
            return cls(groups, tuple(int(n) for n in data["picks"]),
                       tuple(float(t) for t in data["iou_thresholds"]), int(data.get("reference_map", 14)))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"model.options.windows: a window preset needs groups, picks and iou_thresholds: "
                              f"{e}") from None


_CUB = WindowPreset(
    groups=(((4, 4), (3, 5), (5, 3)),
            ((6, 6), (5, 7), (7, 5)),
            ((8, 8), (6, 10), (10, 6), (7, 9), (9, 7), (7, 10), (10, 7))),
    picks=(2, 3, 2),
    iou_thresholds=(0.25, 0.25, 0.25),
)
_CARS = WindowPreset(
    groups=(((6, 6), (5, 7), (7, 5)),
            ((8, 8), (6, 10), (10, 6), (7, 9), (9, 7)),
            ((10, 10), (9, 11), (11, 9), (8, 12), (12, 8))),
    picks=(3, 2, 1),
    iou_thresholds=(0.25, 0.25, 0.25),
)
WINDOW_PRESETS: dict[str, WindowPreset] = {"cub": _CUB, "cars": _CARS, "aircraft": _CARS, "competition": _CARS}


def _scale(cells: int, size: int, reference: int) -> int:
    return min(max(math.floor(cells * size / reference + 0.5), 1), size)


@dataclass(frozen=True)
class WindowGeometry:
    """All windows of a preset on a ``map_h`` x ``map_w`` feature map with cells of ``stride`` px."""

    preset: WindowPreset
    map_h: int
    map_w: int
    stride: int = 32

    @cached_property
    def ratios(self) -> tuple[tuple[Ratio, ...], ...]:
        ref = self.preset.reference_map
        return tuple(tuple((_scale(a, self.map_h, ref), _scale(b, self.map_w, ref)) for a, b in group)
                     for group in self.preset.groups)

    @cached_property
    def group_sizes(self) -> tuple[int, ...]:
        return tuple(sum((self.map_h - a + 1) * (self.map_w - b + 1) for a, b in g) for g in self.ratios)

    @cached_property
    def group_offsets(self) -> tuple[int, ...]:
        return tuple(sum(self.group_sizes[:i]) for i in range(len(self.group_sizes)))

    @property
    def num_windows(self) -> int:
        return sum(self.group_sizes)

    @cached_property
    def cells(self) -> Tensor:
        """(W, 4) long: (row0, col0, rows, cols) of every window, in global index order."""
        out = []
        for group in self.ratios:
            for a, b in group:
                rows, cols = torch.meshgrid(torch.arange(self.map_h - a + 1), torch.arange(self.map_w - b + 1),
                                            indexing="ij")
                out.append(torch.stack([rows.flatten(), cols.flatten(),
                                        torch.full_like(rows.flatten(), a), torch.full_like(rows.flatten(), b)], 1))
        return torch.cat(out)

    @cached_property
    def boxes(self) -> Tensor:
        """(W, 4) long: inclusive (x0, y0, x1, y1) pixel boxes, x = column (reference rule)."""
        r, c, a, b = self.cells.unbind(1)
        s = self.stride
        top, left = s * r - 1, s * c - 1
        return torch.stack([left.clamp(min=0), top.clamp(min=0), left + s * b, top + s * a], 1)

    def on(self, device: torch.device) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
        """(cells, boxes, suppression) on ``device``, copied there once."""
        cache = self.__dict__.setdefault("_on_device", {})
        if device not in cache:
            cache[device] = (self.cells.to(device), self.boxes.to(device),
                             tuple(t.to(device) for t in self.suppression))
        return cache[device]

    @cached_property
    def suppression(self) -> tuple[Tensor, ...]:
        """Per group, (n, n) bool: window j is suppressed by picking window i (IoU > threshold)."""
        out = []
        for offset, size, thr in zip(self.group_offsets, self.group_sizes, self.preset.iou_thresholds, strict=True):
            boxes = self.boxes[offset:offset + size].to(torch.float64)
            out.append(box_iou_inclusive(boxes, boxes) > thr)
        return tuple(out)
