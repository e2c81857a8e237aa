"""MMAL-Net: multi-branch, multi-scale attention learning (Zhang et al., 2020).

Raw, object and part branches share one backbone and one linear classifier (dropout 0.5 before
it, REFERENCE M9). AOLM finds the object box from the last two feature maps; APPM scores
windows on the object image's feature map and keeps the best few per scale group with NMS. All
of it is batched on the input's device: no numpy, no per-sample or per-window Python loop, no
host synchronisation (REFERENCE M4).

Conventions: boxes are ``(x0, y0, x1, y1)``, x = column, inclusive pixel indices (the reference
stores rows first; only the order differs). Fixes: M1 (any input size multiple of 32), M5/M6 (an
empty mask or empty intersection falls back to the whole image and is counted in
``extras["object_fallback"]``), M12 (no window loss on zero logits in eval), M20 (``self.training``
instead of a status string).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.profiler import record_function

from ..errors import ConfigError
from .backbones import Backbone
from .output import LossTerms, ModelOutput
from .registry import AuthorsLayout, ModelSpec, Picture, register_model
from .windows import WINDOW_PRESETS, WindowGeometry, WindowPreset

__all__ = ["aolm_boxes", "largest_component", "window_scores", "select_windows", "crop_resize", "MMALNet"]


def _region(name: str) -> contextlib.AbstractContextManager:
    """A named profiler region (benchmarks report AOLM/APPM/crops' share), left out under
    ``torch.compile``, which cannot trace the profiler's context manager."""
    return contextlib.nullcontext() if torch.compiler.is_compiling() else record_function(name)


# -- AOLM ---------------------------------------------------------------------------------------

_NEIGHBOURS: dict[tuple[int, int, torch.device], Tensor] = {}


def _neighbours(h: int, w: int, device: torch.device) -> Tensor:
    """(N, N) float: 1 where two pixels of an h x w grid are 8-connected (or the same pixel)."""
    key = (h, w, device)
    if key not in _NEIGHBOURS:
        r, c = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        r, c = r.flatten(), c.flatten()
        near = ((r[:, None] - r[None, :]).abs() <= 1) & ((c[:, None] - c[None, :]).abs() <= 1)
        _NEIGHBOURS[key] = near.to(device=device, dtype=torch.float32)
    return _NEIGHBOURS[key]


def largest_component(mask: Tensor) -> Tensor:
    """The largest 8-connected component of each (H, W) mask in a batch (B, H, W) -> bool.

    Ties go to the component whose first pixel comes first in raster order (skimage's label
    order, which the reference's ``areas.index(max(areas))`` picks). Connectivity is computed
    as the transitive closure of the adjacency matrix by repeated squaring — ceil(log2(H·W))
    batched matmuls, no data-dependent loop. An empty mask gives an empty result.
    """
    b, h, w = mask.shape
    n = h * w
    m = mask.reshape(b, n).to(torch.float32)
    reach = _neighbours(h, w, mask.device) * m[:, :, None] * m[:, None, :]
    for _ in range(max(1, math.ceil(math.log2(n)))):
        reach = torch.bmm(reach, reach).clamp_(max=1.0)
    size = reach.sum(dim=2)  # (B, N): size of each pixel's component, 0 off the mask
    order = torch.arange(n, 0, -1, device=mask.device, dtype=torch.float32)  # n - raster index
    first = (reach * order).amax(dim=2)  # n - first raster index of the component
    score = torch.where(m > 0, size * (n + 1) + first, torch.full_like(size, -1.0))
    seed = score.argmax(dim=1)
    chosen = reach[torch.arange(b, device=mask.device), seed] > 0
    return chosen.reshape(b, h, w)


def _mask_bbox(mask: Tensor) -> tuple[Tensor, Tensor]:
    """Cell bounding box (row0, col0, row1, col1), ends exclusive, of each (H, W) mask; and whether
    the mask is non-empty. Empty masks give the whole map."""
    b, h, w = mask.shape
    rows, cols = mask.any(dim=2), mask.any(dim=1)
    nonempty = rows.any(dim=1)
    r0 = rows.to(torch.uint8).argmax(dim=1)
    r1 = h - rows.flip(1).to(torch.uint8).argmax(dim=1)
    c0 = cols.to(torch.uint8).argmax(dim=1)
    c1 = w - cols.flip(1).to(torch.uint8).argmax(dim=1)
    box = torch.stack([r0, c0, r1, c1], dim=1)
    whole = torch.tensor([0, 0, h, w], device=mask.device).expand(b, 4)
    return torch.where(nonempty[:, None], box, whole), nonempty


def cells_to_pixels(cell_box: Tensor, stride: int) -> Tensor:
    """(row0, col0, row1, col1) exclusive cells -> inclusive (x0, y0, x1, y1) pixels, x = column,
    with the reference's rule: start ``stride·cell − 1`` clamped at 0, end ``stride·cell − 1``."""
    r0, c0, r1, c1 = cell_box.unbind(1)
    return torch.stack([(stride * c0 - 1).clamp(min=0), (stride * r0 - 1).clamp(min=0),
                        stride * c1 - 1, stride * r1 - 1], dim=1)


def aolm_boxes(fm: Tensor, penultimate: Tensor, stride: int) -> tuple[Tensor, Tensor]:
    """Attention object location (REFERENCE §2.4): returns pixel boxes (B, 4) and a fallback flag
    (B,) that is True where the whole image was used (empty mask or empty intersection)."""
    def above_mean(x: Tensor) -> Tensor:
        a = x.sum(dim=1)
        return a > a.mean(dim=(1, 2), keepdim=True)  # strict ">", as the reference

    component = largest_component(above_mean(fm))
    cell_box, found = _mask_bbox(component & above_mean(penultimate))
    return cells_to_pixels(cell_box, stride), ~found


# -- APPM ---------------------------------------------------------------------------------------

def window_scores(fm: Tensor, geometry: WindowGeometry) -> Tensor:
    """Mean channel-summed activation of every window (B, W). Summing channels first and then
    averaging each window (an integral image, one gather) equals the reference's per-ratio
    AvgPool2d over all channels followed by the channel sum: both are linear."""
    total = fm.sum(dim=1)  # (B, H, W)
    integral = F.pad(total.cumsum(1).cumsum(2), (1, 0, 1, 0))
    r, c, a, b = geometry.on(fm.device)[0].unbind(1)
    width = integral.shape[2]
    flat = integral.flatten(1)

    def at(rr: Tensor, cc: Tensor) -> Tensor:
        return flat[:, rr * width + cc]

    sums = at(r + a, c + b) - at(r, c + b) - at(r + a, c) + at(r, c)
    return sums / (a * b).to(sums.dtype)


def select_windows(scores: Tensor, geometry: WindowGeometry) -> Tensor:
    """Greedy NMS per group, batched: (B, N) global window indices, groups in order.

    Each step takes the highest-scoring window still available (ties: the lowest index) and
    removes the windows whose inclusive IoU with it exceeds the group's threshold. When a group
    runs out of candidates the last pick is repeated (the reference's fill rule).
    """
    picks = []
    for offset, size, count, suppress in zip(geometry.group_offsets, geometry.group_sizes, geometry.preset.picks,
                                             geometry.on(scores.device)[2], strict=True):
        s = scores[:, offset:offset + size]
        available = torch.ones_like(s, dtype=torch.bool)
        last = torch.zeros(s.shape[0], dtype=torch.long, device=s.device)
        for _ in range(count):  # a handful of picks, not a loop over samples or windows
            best = s.masked_fill(~available, float("-inf")).argmax(dim=1)
            last = torch.where(available.any(dim=1), best, last)
            available &= ~suppress[last]
            picks.append(last + offset)
    return torch.stack(picks, dim=1)


# -- crops --------------------------------------------------------------------------------------

def crop_resize(images: Tensor, boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear crops of inclusive boxes (B, K, 4) resized to ``size`` = (h, w), all in one
    ``grid_sample`` call: (B, K, C, h, w). Equals ``F.interpolate(img[..., y0:y1+1, x0:x1+1],
    size, mode="bilinear", align_corners=True)`` for every box."""
    b, k, _ = boxes.shape
    h_in, w_in = images.shape[-2:]
    h, w = size
    boxes = boxes.to(images.dtype)
    ty = torch.linspace(0, 1, h, device=images.device, dtype=images.dtype)
    tx = torch.linspace(0, 1, w, device=images.device, dtype=images.dtype)
    x0, y0, x1, y1 = (boxes[..., i, None] for i in range(4))  # (B, K, 1)
    gx = (x0 + (x1 - x0) * tx) * (2 / max(w_in - 1, 1)) - 1  # (B, K, w)
    gy = (y0 + (y1 - y0) * ty) * (2 / max(h_in - 1, 1)) - 1  # (B, K, h)
    grid = torch.stack(torch.broadcast_tensors(gx[:, :, None, :], gy[:, :, :, None]), dim=-1)  # (B, K, h, w, 2)
    out = F.grid_sample(images, grid.reshape(b, k * h, w, 2), mode="bilinear", padding_mode="border",
                        align_corners=True)
    return out.view(b, -1, k, h, w).transpose(1, 2)


def windows_in_input(windows: Tensor, object_boxes: Tensor, crop_size: tuple[int, int]) -> Tensor:
    """Map windows (B, N, 4) given in object-image pixels back to input pixels (float)."""
    h, w = crop_size
    ox0, oy0, ox1, oy1 = (object_boxes[:, None, i].to(torch.float32) for i in range(4))
    sx, sy = (ox1 - ox0) / max(w - 1, 1), (oy1 - oy0) / max(h - 1, 1)
    wx0, wy0, wx1, wy1 = windows.to(torch.float32).unbind(-1)
    return torch.stack([ox0 + wx0 * sx, oy0 + wy0 * sy, ox0 + wx1 * sx, oy0 + wy1 * sy], dim=-1)


# -- the model ----------------------------------------------------------------------------------

class MMALNet(nn.Module):
    """MMAL-Net on any :class:`Backbone`.

    ``predict`` chooses what ``logits`` are: ``"object"`` (the paper's and the reference's test
    figure) or ``"raw+object"`` (sum of the two branches' logits). In eval mode the part branch
    (APPM windows and their backbone pass) runs only when ``forward(x, parts=True)``.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        windows: str | WindowPreset | dict = "cub",
        dropout: float = 0.5,
        raw_only_epochs: int = 1,
        predict: str = "object",
    ) -> None:
        super().__init__()
        if predict not in ("object", "raw+object"):
            raise ConfigError(f"model.options.predict must be 'object' or 'raw+object', got {predict!r}")
        if isinstance(windows, dict):
            windows = WindowPreset.from_dict(windows)
        if isinstance(windows, str):
            if windows not in WINDOW_PRESETS:
                raise ConfigError(f"model.options.windows: unknown window preset {windows!r}; "
                                  f"known: {', '.join(WINDOW_PRESETS)}")
            windows = WINDOW_PRESETS[windows]
        self.backbone = backbone
        self.num_classes = num_classes
        self.preset = windows
        self.raw_only_epochs = raw_only_epochs
        self.predict = predict
        self.stride = backbone.strides[2]
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(backbone.channels[2], num_classes)
        self._geometries: dict[tuple[int, int], WindowGeometry] = {}

    def geometry(self, map_h: int, map_w: int) -> WindowGeometry:
        key = (map_h, map_w)
        if key not in self._geometries:
            self._geometries[key] = WindowGeometry(self.preset, map_h, map_w, self.stride)
        return self._geometries[key]

    def _branch(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(last map, penultimate map, logits) of one backbone pass."""
        penultimate, fm = self.backbone.forward_last_two(x)
        logits = self.classifier(self.dropout(fm.mean(dim=(2, 3))))
        return fm, penultimate, logits

    def forward(self, x: Tensor, parts: bool | None = None) -> ModelOutput:
        _, _, h, w = x.shape
        if h % self.stride or w % self.stride:
            raise ConfigError(f"model.input_size: MMAL-Net needs a multiple of {self.stride} px, got {h}x{w}")
        parts = self.training if parts is None else parts
        fm, penultimate, raw_logits = self._branch(x)
        with _region("mmal.aolm"):
            object_boxes, fallback = aolm_boxes(fm.detach(), penultimate.detach(), self.stride)
        with _region("mmal.crops"):
            object_images = crop_resize(x.detach(), object_boxes[:, None], (h, w))[:, 0]
        object_fm, _, object_logits = self._branch(object_images)
        logits = object_logits if self.predict == "object" else raw_logits + object_logits
        out = ModelOutput(logits=logits, branch_logits={"raw": raw_logits, "object": object_logits},
                          object_boxes=object_boxes, extras={"object_fallback": fallback})
        if parts:
            geometry = self.geometry(*object_fm.shape[-2:])
            with _region("mmal.appm"):
                scores = window_scores(object_fm.detach(), geometry)
                indices = select_windows(scores, geometry)
                windows = geometry.on(x.device)[1][indices]  # (B, N, 4) in object-image pixels
            with _region("mmal.crops"):
                part_images = crop_resize(object_images, windows, (h // 2, w // 2)).flatten(0, 1)
            _, _, part_logits = self._branch(part_images.detach())
            out.branch_logits["parts"] = part_logits.view(x.shape[0], -1, self.num_classes)
            out.part_boxes = windows_in_input(windows, object_boxes, (h, w))
            out.extras.update(window_indices=indices, window_scores=scores.gather(1, indices),
                              all_window_scores=scores, part_windows=windows)
        return out

    def explain_forward(self, x: Tensor) -> ModelOutput:
        """``forward`` with the part branch, plus ``window_group_sizes`` (windows picked per scale
        group, in selection order) — what ``fgvc explain`` draws."""
        out = self(x, parts=True)
        out.extras["window_group_sizes"] = torch.tensor(list(self.preset.picks))
        return out

    def loss(self, output: ModelOutput, target: Tensor, epoch: int | None = None) -> tuple[Tensor, LossTerms]:
        """raw + object + parts (every part crop labelled with its image's class); raw alone in the
        first ``raw_only_epochs`` epochs (REFERENCE M10; epochs count from 0; ``None``: the full loss)."""
        terms = {"ce_raw": F.cross_entropy(output.branch_logits["raw"], target),
                 "ce_object": F.cross_entropy(output.branch_logits["object"], target)}
        part_logits = output.branch_logits.get("parts")
        if part_logits is not None:
            n = part_logits.shape[1]
            terms["ce_parts"] = F.cross_entropy(part_logits.flatten(0, 1), target.repeat_interleave(n))
        if epoch is not None and epoch < self.raw_only_epochs:
            return terms["ce_raw"], terms
        return sum(terms.values()), terms  # type: ignore[return-value]


def authors_key(key: str) -> str | None:
    """One key of the authors' MMAL-Net state dict (ZF4444/MMAL-Net 4d5081b, networks/model.py ``MainNet``) ->
    fgvc's: ``pretrained_model`` is their torchvision-named ResNet-50, ``rawcls_net`` the classifier all branches
    share; their ResNet's ImageNet ``fc`` is registered but never used (dropped). KeyError: not one of theirs."""
    head, _, rest = key.partition(".")
    if head == "pretrained_model" and rest:
        return None if rest.startswith("fc.") else f"backbone.body.{rest}"
    if head == "rawcls_net" and rest in ("weight", "bias"):
        return f"classifier.{rest}"
    raise KeyError(key)


register_model(ModelSpec(
    "mmal", MMALNet, head_prefixes=("classifier.",), default_transform="mmal", default_input_size=448,
    warmup_epochs=lambda model: model.raw_only_epochs, step_stats={"object_fallback": "aolm_fallbacks"},
    pictures=(Picture.WINDOWS,), extras=("object_fallback", "window_indices", "window_scores", "window_group_sizes"),
    explain_forward=MMALNet.explain_forward, localises=True,
    authors_layout=AuthorsLayout(  # their train_model.py saves {"epoch", "model_state_dict", "learning_rate"}
        repository="ZF4444/MMAL-Net", rename=authors_key, container="state_dict_key",
        dropped="pretrained_model.fc.*: their ResNet's 1000-class ImageNet classifier, registered but never used"),
))
