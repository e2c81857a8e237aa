"""CAL: Counterfactual Attention Learning (Rao et al., ICCV 2021), on WS-DAN.

A ResNet whose last stage keeps stride 16 gives feature maps F (B, C, h, w); a 1x1 conv, BatchNorm (eps 1e-3)
and ReLU give M attention maps A. Bilinear attention pooling (BAP) averages F under each map, takes the
signed square root and L2-normalises the (M·C) vector; a bias-free linear layer on 100 times that vector gives
the logits p. The counterfactual is the same pooling under random attention (uniform on [0, 2] in training,
all ones in evaluation); ``aux = p - fc(100 · counterfactual)`` is the *effect* of the learnt attention, trained
with its own cross-entropy. Training adds WS-DAN's attention crop and drop (a second forward on the cropped and
the dropped images) and the centre loss towards per-class feature centres, kept in the buffer
``feature_center`` (so checkpoints and exact resume keep them). One training iteration is
:func:`cal_train_passes` (the spec's ``train_passes``): loss = CE(raw)/3 + CE(aux of all 3B images) +
CE(crop and drop)·2/3 + centre loss.

Evaluation (``inference``): ``"infer"`` — the authors' test procedure: the raw image and three attention crops
(threshold 0.3, 0.2, 0.1 of the mean map's maximum, padding 0.1, 0.1, 0.05) averaged, the same for the
horizontally flipped image, the two averaged (8 backbone passes in 2 batched calls); ``"validate"`` — their
validation during training, (raw + crop at 0.1 / padding 0.05) / 2; ``"raw"`` — the raw image's logits.
``object_boxes`` is the 0.1 / 0.05 crop box of the raw image (inclusive input pixels).

Random draws are the authors' calls in the authors' order, so a seeded run draws what theirs draws: torch's
``uniform_`` for the counterfactual attention in every training forward; NumPy's legacy global generator for
the two attention maps each image crops and drops with (``np.random.choice(M, 2, p)`` per image, drawn here as
one ``random_sample((B, 2))`` and a search in each image's cumulative weights — the same numbers); Python's
``random.uniform`` per image for the crop thresholds, then per image for the drop thresholds.

Differences from the authors' code (``raoyongming/CAL``, ``fgvc/``):
  * C1 — feature centres with a repeated label. ``feature_center[y] += beta * (...)`` is an indexed assignment:
    for a class that appears twice in a batch only one image's update survives (on a GPU which one is not
    defined). fgvc adds every image's update (``center_update="sum"``, deterministic);
    ``center_update="authors"`` runs their indexed assignment. Batches without a repeated label are identical.
  * C2 — an empty crop mask. The crop threshold is a fraction of the attention map's maximum on the feature
    grid, the mask is taken on the bilinearly upsampled map, whose samples can miss that maximum; with no pixel
    above the threshold (or a crop box of no pixel at a tiny input) their code raises in ``min()`` of an empty
    tensor. fgvc crops the whole image (at least one pixel) and flags the image in ``extras["crop_fallback"]``
    (logged per epoch as ``cal_crop_fallbacks``). No switch: their behaviour is an exception.
  * C3 — the same numbers, computed batched: crops are one ``grid_sample`` for the batch (equal to their
    per-image ``upsample_bilinear`` of the box, ``align_corners=True``, within float rounding), masks and boxes
    are tensor operations without a per-image loop or host synchronisation, the eval counterfactual (all-ones
    attention) is the spatial mean repeated M times; the 8 views of ``infer`` run in two batched forwards.
  * C4 — ``last_stride`` (1: their ResNet's stride-16 last stage, the default; 2: the plain backbone) works on
    any ResNet backbone (the first block of ``layer4`` is set to stride 1: its strided convs, as their ResNet
    builds it); a backbone without ``body.layer4`` needs ``last_stride=2``. ``attentions`` (M), ``beta`` and the
    evaluation procedure (``inference``) are options; their code fixes them in its config files and scripts.
  * C5 — their checkpoint callback saves the DistributedDataParallel module's keys (``module.`` prefix), their
    ``save_model`` the plain ones: the authors' layout reads both.
  * C6 — the ``cal`` transform (``data/transforms.py``) is theirs (resize to S / 0.875, random / centre crop S,
    flip, ``ColorJitter(brightness=0.126, saturation=0.5)``, ImageNet mean and std); the jitter runs batched on
    the training device, per image factors and order as ColorJitter draws them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .backbones import Backbone
from .mmal import crop_resize
from .output import LossTerms, ModelOutput, TrainPass
from .registry import AuthorsLayout, ModelSpec, Picture, register_model

__all__ = ["CAL", "AttentionConv", "attention_crop_boxes", "attention_drop", "cal_train_passes", "authors_key"]

EPSILON = 1e-6  # sign-sqrt and attention-weight offset, the authors' value
CROP_THETA = (0.4, 0.6)  # training crop threshold range (fraction of the map's maximum)
CROP_PADDING = 0.1
DROP_THETA = (0.2, 0.5)
INFER_CROPS = ((0.3, 0.1), (0.2, 0.1), (0.1, 0.05))  # (threshold, padding) of the test-time crops
VALIDATE_CROP = (0.1, 0.05)
INFERENCE_MODES = ("infer", "validate", "raw")
CENTER_UPDATES = ("sum", "authors")


class AttentionConv(nn.Module):
    """1x1 conv (no bias), BatchNorm (eps 1e-3), ReLU: the M attention maps (``conv``/``bn`` as the authors')."""

    def __init__(self, in_channels: int, maps: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, maps, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(maps, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _signed_sqrt_normalised(pooled: Tensor) -> Tensor:
    """(B, M, C) -> (B, M·C): signed square root (offset 1e-6), then L2-normalised."""
    flat = pooled.flatten(1)
    return F.normalize(torch.sign(flat) * torch.sqrt(flat.abs() + EPSILON), dim=-1)


def _stride_one_layer4(backbone: Backbone) -> None:
    """The first block of ``layer4`` at stride 1 (its strided convs, 3x3 and downsample), output stride 16."""
    layer4 = getattr(backbone.body, "layer4", None)
    if not isinstance(layer4, nn.Sequential) or len(layer4) == 0:
        raise ConfigError(f"model.options.last_stride: 1 needs a ResNet backbone (body.layer4); "
                          f"{backbone.name!r} has none: set model.options.last_stride: 2")
    for module in layer4[0].modules():
        if isinstance(module, nn.Conv2d) and module.stride != (1, 1):
            module.stride = (1, 1)
        elif isinstance(module, nn.AvgPool2d | nn.MaxPool2d) and module.stride not in (1, (1, 1)):
            raise ConfigError(f"model.options.last_stride: 1 cannot remove the pooling in {backbone.name!r}'s "
                              "layer4 downsample: set model.options.last_stride: 2")
    if hasattr(layer4[0], "stride"):
        layer4[0].stride = 1
    backbone.strides = (backbone.strides[0], backbone.strides[1], backbone.strides[1])


_BOX_TABLES: dict[tuple[int, float, torch.device], tuple[Tensor, Tensor]] = {}


def _box_table(size: int, padding: float, device: torch.device) -> tuple[Tensor, Tensor]:
    """For every mask row (column) index r of a side of ``size`` px: the authors' padded crop start
    ``max(int(r - padding·size), 0)`` and exclusive end ``min(int(r + padding·size), size)``, computed with
    Python floats as theirs (then exact integers), looked up by the batched box code."""
    key = (size, padding, device)
    if key not in _BOX_TABLES:
        pad = padding * size
        start = [max(int(r - pad), 0) for r in range(size)]
        end = [min(int(r + pad), size) for r in range(size)]
        _BOX_TABLES[key] = (torch.tensor(start, device=device), torch.tensor(end, device=device))
    return _BOX_TABLES[key]


def _upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=True)


def _threshold(maps: Tensor, theta: Tensor | float | list[float]) -> Tensor:
    """``theta`` (one value or one per image) times each map's maximum (B,), with the arithmetic of the authors'
    ``python_float * tensor.max()``: the factor rounded to the op's compute type (float32 for half maps)."""
    compute = torch.promote_types(maps.dtype, torch.float32)
    peak = maps.amax(dim=(1, 2, 3)).to(compute)
    if isinstance(theta, int | float):  # one value: no per-image list, so the batch size stays free in an export
        return (peak * float(theta)).to(maps.dtype)
    if isinstance(theta, Tensor):
        factor = theta.to(device=maps.device, dtype=compute)
    else:
        factor = torch.tensor([float(t) for t in theta], device=maps.device, dtype=compute)
    return (factor * peak).to(maps.dtype)


def attention_crop_boxes(maps: Tensor, theta: Tensor | float | list[float], padding: float,
                         size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Crop boxes (B, 4) as inclusive input pixels (x0, y0, x1, y1) and the fallback flag (B,) bool.

    ``maps`` (B, 1, h, w) is upsampled to ``size`` (bilinear, corners aligned); the mask keeps the pixels at
    least ``theta`` (per image or one value) times the map's maximum on the feature grid; the box is the mask's
    row and column range padded by ``padding`` times the side, as the authors compute it. An empty mask crops
    the whole image (C2)."""
    h, w = size
    b = maps.shape[0]
    mask = _upsample(maps, size)[:, 0] >= _threshold(maps, theta).view(b, 1, 1)
    rows, cols = mask.any(dim=2), mask.any(dim=1)
    found = rows.any(dim=1)
    r0 = rows.to(torch.uint8).argmax(dim=1)
    r1 = h - 1 - rows.flip(1).to(torch.uint8).argmax(dim=1)
    c0 = cols.to(torch.uint8).argmax(dim=1)
    c1 = w - 1 - cols.flip(1).to(torch.uint8).argmax(dim=1)
    row_start, row_end = _box_table(h, padding, maps.device)
    col_start, col_end = _box_table(w, padding, maps.device)
    y0, y1 = row_start[r0], row_end[r1] - 1
    x0, x1 = col_start[c0], col_end[c1] - 1
    empty = ~found | (y1 < y0) | (x1 < x0)
    whole = torch.tensor([0, 0, w - 1, h - 1], device=maps.device)
    boxes = torch.where(empty[:, None], whole, torch.stack([x0, y0, x1, y1], dim=1))
    return boxes, empty


def attention_drop(images: Tensor, maps: Tensor, theta: Tensor | float | list[float]) -> Tensor:
    """The images with the pixels where the upsampled map reaches ``theta`` (B,) times its maximum set to 0."""
    b = images.shape[0]
    keep = _upsample(maps, tuple(images.shape[-2:])) < _threshold(maps, theta).view(b, 1, 1, 1)
    return images * keep.to(images.dtype)


def _uniform_draws(low: float, high: float, n: int) -> list[float]:
    """``random.uniform(low, high)`` n times: Python's generator, as the authors draw per image."""
    return [random.uniform(low, high) for _ in range(n)]


class CAL(nn.Module):
    """WS-DAN with counterfactual attention learning on any :class:`Backbone` (ResNets for ``last_stride=1``).

    ``attentions`` is M; ``beta`` the feature-centre rate; ``last_stride`` 1 (stride-16 features, the authors')
    or 2; ``inference`` ``"infer"`` | ``"validate"`` | ``"raw"`` (what eval ``logits`` are);
    ``center_update`` ``"sum"`` | ``"authors"`` (C1).
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        attentions: int = 32,
        beta: float = 0.05,
        last_stride: int = 1,
        inference: str = "infer",
        center_update: str = "sum",
    ) -> None:
        super().__init__()
        if inference not in INFERENCE_MODES:
            raise ConfigError(f"model.options.inference must be one of {', '.join(INFERENCE_MODES)}, "
                              f"got {inference!r}")
        if center_update not in CENTER_UPDATES:
            raise ConfigError(f"model.options.center_update must be one of {', '.join(CENTER_UPDATES)}, "
                              f"got {center_update!r}")
        if last_stride not in (1, 2):
            raise ConfigError(f"model.options.last_stride must be 1 or 2, got {last_stride!r}")
        if attentions < 1:
            raise ConfigError(f"model.options.attentions must be at least 1, got {attentions!r}")
        if last_stride == 1:
            _stride_one_layer4(backbone)
        self.backbone = backbone
        self.num_classes = num_classes
        self.num_attentions = attentions
        self.beta = beta
        self.last_stride = last_stride
        self.inference = inference
        self.center_update = center_update
        channels = backbone.channels[2]
        self.attentions = AttentionConv(channels, attentions)
        self.fc = nn.Linear(attentions * channels, num_classes, bias=False)
        self.register_buffer("feature_center", torch.zeros(num_classes, attentions * channels))

    # -- one pass ---------------------------------------------------------------------------------

    def _pass(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(p, aux, feature matrix (B, M·C), attention maps (B, M, h, w)) of one batch."""
        features = self.backbone(x)[2]
        maps = self.attentions(features)
        b, m = maps.shape[:2]
        area = features.shape[2] * features.shape[3]
        columns = features.flatten(2).transpose(1, 2)  # (B, hw, C)
        if self.training:  # the real and the random attention pool in one product (B, 2M, hw) @ (B, hw, C)
            fake = torch.zeros_like(maps).uniform_(0, 2)
            pooled = torch.bmm(torch.cat([maps, fake], dim=1).flatten(2), columns) / area
            real, pooled = pooled[:, :m], pooled[:, m:]
        else:  # all-ones attention: every map pools the spatial mean (C3)
            real = torch.bmm(maps.flatten(2), columns) / area
            pooled = features.mean(dim=(2, 3))[:, None].expand(-1, m, -1)
        feature_matrix = _signed_sqrt_normalised(real)
        counterfactual = _signed_sqrt_normalised(pooled)
        both = self.fc(torch.cat([feature_matrix, counterfactual]) * 100.0)  # one product for both heads
        p = both[:b]
        return p, p - both[b:], feature_matrix, maps

    def _choose_maps(self, maps: Tensor) -> Tensor:
        """(B, 2) map indices drawn per image with probability ∝ sqrt(map sum + 1e-6): the authors'
        ``np.random.choice(M, 2, p)``, the same NumPy draws (two uniforms per image, inverse CDF)."""
        weights = maps.detach().to(torch.promote_types(maps.dtype, torch.float32)).sum(dim=(2, 3))
        weights = F.normalize(torch.sqrt(weights + EPSILON), p=1, dim=1)
        cdf = weights.double().cumsum(dim=1)
        cdf = cdf / cdf[:, -1:]
        u = torch.from_numpy(np.random.random_sample((maps.shape[0], 2))).to(cdf.device)
        return torch.searchsorted(cdf, u, right=True).clamp_(max=maps.shape[1] - 1)

    def forward(self, x: Tensor) -> ModelOutput:
        if self.training:
            p, aux, feature_matrix, maps = self._pass(x)
            chosen = self._choose_maps(maps)
            pair = maps.gather(1, chosen[:, :, None, None].expand(-1, -1, *maps.shape[2:]))
            return ModelOutput(logits=p, branch_logits={"raw": p, "aux": aux},
                               extras={"feature_matrix": feature_matrix, "attention_maps": maps,
                                       "attention_pair": pair, "attention_choice": chosen})
        if self.inference == "infer":
            return self._infer(x)
        p, aux, _, maps = self._pass(x)
        mean_map = maps.mean(dim=1, keepdim=True)
        size = (x.shape[2], x.shape[3])
        boxes, fallback = attention_crop_boxes(mean_map, VALIDATE_CROP[0], VALIDATE_CROP[1], size)
        out = ModelOutput(logits=p, branch_logits={"raw": p, "aux": aux}, object_boxes=boxes,
                          extras={"attention_maps": maps, "crop_fallback": fallback})
        if self.inference == "validate":
            p_crop, aux_crop, _, _ = self._pass(crop_resize(x, boxes[:, None], size)[:, 0])
            out.logits = (p + p_crop) / 2.0
            out.branch_logits = {"raw": p, "crop": p_crop, "aux": (aux + aux_crop) / 2.0}
        return out

    def _infer(self, x: Tensor) -> ModelOutput:
        """The authors' test: raw + 3 crops, averaged, for the image and its mirror, averaged (C3: batched)."""
        b = x.shape[0]
        size = (x.shape[2], x.shape[3])
        views = torch.cat([x, x.flip(3)])
        p, aux, _, maps = self._pass(views)
        mean_map = maps.mean(dim=1, keepdim=True)
        crops = [attention_crop_boxes(mean_map, theta, padding, size) for theta, padding in INFER_CROPS]
        boxes = torch.stack([box for box, _ in crops], dim=1)  # (2B, 3, 4)
        crop_images = crop_resize(views, boxes, size)  # (2B, 3, C, H, W)
        p_crops, aux_crops, _, _ = self._pass(crop_images.transpose(0, 1).flatten(0, 1))
        p_crops, aux_crops = p_crops.view(3, 2 * b, -1), aux_crops.view(3, 2 * b, -1)

        def combine(raw: Tensor, crop: Tensor) -> tuple[Tensor, Tensor]:
            four = (raw + crop[0] + crop[1] + crop[2]) / 4.0
            return four[:b], four[b:]

        plain, mirrored = combine(p, p_crops)
        aux_plain, aux_mirrored = combine(aux, aux_crops)
        box, fallback = crops[-1]
        return ModelOutput(logits=(plain + mirrored) / 2.0,
                           branch_logits={"raw": p[:b], "unflipped": plain, "flipped": mirrored,
                                          "aux": (aux_plain + aux_mirrored) / 2.0},
                           object_boxes=box[:b], extras={"attention_maps": maps[:b], "crop_fallback": fallback[:b]})

    # -- training ---------------------------------------------------------------------------------

    @torch.no_grad()
    def update_centers(self, feature_matrix: Tensor, target: Tensor) -> Tensor:
        """Move the centres of the batch's classes towards the batch's feature matrices; returns the
        L2-normalised centres *before* the update (the centre loss's targets), as the authors do."""
        center = self.feature_center
        batch_center = F.normalize(center[target], dim=-1)
        delta = self.beta * (feature_matrix.detach().to(center.dtype) - batch_center)
        if self.center_update == "authors":
            center[target] += delta  # an indexed assignment: one update per class survives (C1)
        else:
            center.index_put_((target,), delta, accumulate=True)
        return batch_center

    def loss(self, output: ModelOutput, target: Tensor, epoch: int | None = None) -> tuple[Tensor, LossTerms]:
        """Evaluation loss: cross-entropy of ``logits`` (the training loss is :func:`cal_train_passes`')."""
        ce = F.cross_entropy(output.logits, target)
        return ce, {"ce": ce}


def cal_train_passes(model: nn.Module, forward: Callable[..., ModelOutput], x: Tensor, y: Tensor,
                     epoch: int) -> Iterator[TrainPass]:
    """One CAL training iteration (the authors' ``train()`` body): forward, centre update, attention crop and
    drop (no gradient), a forward on both, and one loss. ``model`` is the plain :class:`CAL`."""
    assert isinstance(model, CAL)
    out = forward(x)
    b = x.shape[0]
    feature_matrix = out.extras["feature_matrix"]
    batch_center = model.update_centers(feature_matrix, y)
    size = (x.shape[2], x.shape[3])
    with torch.no_grad():
        pair = out.extras["attention_pair"].detach()
        crop_theta = _uniform_draws(*CROP_THETA, b)  # crops first, then drops: the authors' draw order
        drop_theta = _uniform_draws(*DROP_THETA, b)
        boxes, fallback = attention_crop_boxes(pair[:, :1], crop_theta, CROP_PADDING, size)
        crop_images = crop_resize(x, boxes[:, None], size)[:, 0]
        drop_images = attention_drop(x, pair[:, 1:], drop_theta)
    aug = forward(torch.cat([crop_images, drop_images]))
    y_aug = torch.cat([y, y])
    terms = {
        "ce_raw": F.cross_entropy(out.branch_logits["raw"], y),
        "ce_aux": F.cross_entropy(torch.cat([out.branch_logits["aux"], aug.branch_logits["aux"]]),
                                  torch.cat([y, y_aug])),
        "ce_aug": F.cross_entropy(aug.branch_logits["raw"], y_aug),
        "center": F.mse_loss(feature_matrix, batch_center.to(feature_matrix.dtype), reduction="sum") / b,
    }
    total = terms["ce_raw"] / 3.0 + terms["ce_aux"] + terms["ce_aug"] * 2.0 / 3.0 + terms["center"]
    out.object_boxes = boxes
    out.extras["crop_fallback"] = fallback
    yield TrainPass(output=out, loss=total, terms=terms)


def explain_forward(model: CAL, x: Tensor) -> ModelOutput:
    """``forward`` plus what ``fgvc explain`` draws: the attention (mean of the M maps, what the crops
    threshold), the crop region the prediction uses (its box as a mask) and the region a training drop would
    erase from the strongest map at the middle of the drop thresholds (``heatmap1..3``)."""
    out = model(x)
    maps = out.extras["attention_maps"]
    size = (x.shape[2], x.shape[3])
    mean_map = maps.mean(dim=1, keepdim=True)
    boxes = out.object_boxes
    assert boxes is not None, "explain draws from the eval forward, which returns the crop box in every mode"
    rows = torch.arange(size[0], device=x.device).view(1, -1, 1)
    cols = torch.arange(size[1], device=x.device).view(1, 1, -1)
    x0, y0, x1, y1 = (boxes[:, i].view(-1, 1, 1) for i in range(4))
    crop = ((rows >= y0) & (rows <= y1) & (cols >= x0) & (cols <= x1)).to(x.dtype)
    strongest = maps.gather(1, maps.sum(dim=(2, 3)).argmax(dim=1).view(-1, 1, 1, 1).expand(-1, 1, *maps.shape[2:]))
    middle = sum(DROP_THETA) / 2
    dropped = 1.0 - attention_drop(torch.ones_like(x[:, :1]), strongest, middle)[:, 0]
    out.extras.update(heatmap1=mean_map[:, 0], heatmap2=crop, heatmap3=dropped)
    return out


_AUTHORS_FEATURES = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}


def authors_key(key: str) -> str | None:
    """The authors' state-dict key (their ResNet ``features`` Sequential, ``attentions``, ``fc``; an optional
    ``module.`` prefix, C5) -> fgvc's."""
    key = key.removeprefix("module.")
    if key.startswith("features."):
        index, _, rest = key[len("features."):].partition(".")
        if index not in _AUTHORS_FEATURES:
            raise KeyError(key)
        return f"backbone.body.{_AUTHORS_FEATURES[index]}.{rest}"
    if key.startswith(("attentions.", "fc.")):
        return key
    raise KeyError(key)


register_model(ModelSpec(
    "cal", CAL, head_prefixes=("fc.", "feature_center"), default_transform="cal", default_input_size=448,
    train_passes=cal_train_passes, localises=True, step_stats={"crop_fallback": "cal_crop_fallbacks"},
    extras=("feature_matrix", "attention_maps", "attention_pair", "attention_choice", "crop_fallback", "heatmapN"),
    pictures=(Picture.HEATMAPS,), explain_forward=explain_forward,
    heatmap_titles=("attention: mean of the maps", "crop the prediction uses", "a training drop (θ 0.35)"),
    authors_layout=AuthorsLayout(repository="raoyongming/CAL", rename=authors_key, container="state_dict_key",
                                 buffers={"feature_center": "feature_center"}),
))
