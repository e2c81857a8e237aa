"""FBSD: Feature Boosting, Suppression and Diversification (Song & Yang, 2021).

Faithful to the authors' code (REFERENCE §1): FBSM after the stride-8/16/32 stages with
k = 8, 4, 2 horizontal strips, the suppressed map feeding the next stage; 1x1 -> 3x3 conv blocks
(BN momentum 0.01); FDM between the three pairs (negative cosine similarity, both softmax
directions, un-normalised values, factor 0.001); top-5 mean pooling; three part heads and a
concat head. Loss 2·(CE1+CE2+CE3) + CE_concat; prediction = sum of the four logits.

Differences from the reference, all documented in REFERENCE terms:
  * F4 — any input whose stride-8/16/32 maps have at least k rows works (multiples of 32 from
    64 px). Strips follow ``torch.tensor_split``: with H rows and k strips the first ``H % k``
    strips get one extra row. When k divides H this is exactly the reference's ``split(H // k)``.
  * F5 — the per-strip 1x1 conv runs once over the whole map (a 1x1 conv is per pixel, so this is
    identical). The 1-channel BatchNorm reproduces the reference's per-strip calls: in train mode
    each strip is normalised with its own batch statistics, and the running statistics receive
    the k sequential momentum updates in closed form. Eval mode is the plain running-stat BN.
  * F6 — alpha, beta, gamma, the FDM factor, top-k, dropout and the conv blocks' BatchNorm momentum
    (0.01, the authors'; a short run wants 0.1) are constructor arguments.
  * F7 — the BatchNorm1d layers of the heads accept a training batch of one (see layers.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .backbones import Backbone
from .layers import BasicConv, ClassifierHead, authors_block_or_head_key, conv_block
from .output import LossTerms, ModelOutput
from .registry import AuthorsLayout, ModelSpec, Picture, register_model

__all__ = ["FBSM", "FDM", "TopKPool", "BasicConv", "FBSD", "strip_sizes"]


def strip_sizes(height: int, k: int) -> list[int]:
    """Rows per strip, ``torch.tensor_split`` style: the first ``height % k`` strips get one more."""
    if height < k:
        raise ConfigError(
            f"a feature map of {height} rows cannot be cut into {k} strips: use a larger input "
            "(FBSD needs at least 64 px, multiples of 32)"
        )
    base, extra = divmod(height, k)
    return [base + 1 if i < extra else base for i in range(k)]


class FBSM(nn.Module):
    """Feature boosting and suppression over k horizontal strips (REFERENCE §1.3)."""

    def __init__(self, in_channels: int, k: int, alpha: float = 0.5, beta: float = 0.5) -> None:
        super().__init__()
        self.k, self.alpha, self.beta = k, alpha, beta
        self.conv = nn.Conv2d(in_channels, 1, kernel_size=1, bias=True)
        self.bn = nn.BatchNorm2d(1)
        self._geometry: dict[tuple[int, torch.device, torch.dtype], tuple[Tensor, Tensor]] = {}

    def _strips(self, height: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """(strip index of each row (H,), row-to-strip averaging matrix (k, H)); cached per size."""
        key = (height, device, dtype)
        if key not in self._geometry:
            sizes = strip_sizes(height, self.k)
            row_strip = torch.tensor([i for i, n in enumerate(sizes) for _ in range(n)])
            rows = torch.tensor(sizes, dtype=torch.float64)[:, None]
            average = F.one_hot(row_strip, self.k).T.to(torch.float64) / rows
            self._geometry[key] = (row_strip.to(device), average.to(device=device, dtype=dtype))
        return self._geometry[key]

    def _strip_batch_norm(self, y: Tensor, row_strip: Tensor, average: Tensor) -> Tensor:
        """The reference's per-strip BatchNorm2d(1) calls, in one pass over the whole map."""
        bn = self.bn
        if not bn.training:
            return bn(y)
        b, _, h, w = y.shape
        row_mean = y.mean(dim=(0, 1, 3))  # (H,)
        strip_mean = average @ row_mean  # (k,): mean over the strip's rows, batch and columns
        centred = y - strip_mean[row_strip].view(1, 1, h, 1)
        strip_var = average @ centred.pow(2).mean(dim=(0, 1, 3))  # biased, as BN normalises
        out = centred * torch.rsqrt(strip_var[row_strip].view(1, 1, h, 1) + bn.eps)
        out = out * bn.weight.view(1, 1, 1, 1) + bn.bias.view(1, 1, 1, 1)
        if bn.running_mean is not None:
            with torch.no_grad():
                m = bn.momentum if bn.momentum is not None else 0.1
                n = (average > 0).sum(dim=1).to(y.dtype) * b * w  # values per strip
                unbiased = strip_var * n / (n - 1).clamp(min=1)
                # k sequential updates r <- (1-m) r + m v_i, summed in closed form
                decay = (1 - m) ** torch.arange(self.k - 1, -1, -1, device=y.device, dtype=y.dtype)
                keep = (1 - m) ** self.k
                bn.running_mean.mul_(keep).add_((m * decay * strip_mean).sum().to(bn.running_mean.dtype))
                bn.running_var.mul_(keep).add_((m * decay * unbiased).sum().to(bn.running_var.dtype))
                bn.num_batches_tracked.add_(self.k)
        return out

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Returns (boosted map, suppressed map, strip importances b of shape (B, k))."""
        row_strip, average = self._strips(x.shape[2], x.device, x.dtype)
        y = self._strip_batch_norm(self.conv(x), row_strip, average)
        scores = F.relu(y).mean(dim=3).flatten(1) @ average.T  # (B, k): GAP of each strip
        importance = torch.softmax(scores, dim=1)
        rows = importance[:, row_strip].view(x.shape[0], 1, -1, 1)
        boosted = x + self.alpha * (x * rows)
        # The arg-max strip (all of them on a tie) is multiplied by beta, the others by 1.
        keep = (importance < importance.amax(dim=1, keepdim=True)).to(x.dtype).clamp(min=self.beta)
        suppressed = x * keep[:, row_strip].view(x.shape[0], 1, -1, 1)
        return boosted, suppressed, importance


def _scaled_columns(f: Tensor, scale: float) -> Tensor:
    """``scale`` times ``F.normalize(f, dim=1)``: every position's feature vector of length |scale|.
    The sign folds FDM's negation into a pass that happens anyway."""
    return f * (scale / f.norm(dim=1, keepdim=True).clamp_min(1e-12))


def _attention(na_neg: Tensor, nb: Tensor) -> tuple[Tensor, Tensor]:
    """One FDM pair's weights from a's negated and b's plain unit columns: (B, S, M) with columns
    summing to 1 over a's S positions (what b gathers from a) and (B, M, S) summing to 1 over b's M
    positions (what a gathers from b). Each position attends to the *least* similar positions."""
    sim = torch.bmm(na_neg.transpose(1, 2), nb)  # negative cosine similarity
    return torch.softmax(sim, dim=1), torch.softmax(sim.transpose(1, 2), dim=1)


class FDM(nn.Module):
    """Feature diversification (REFERENCE §1.4) of all pairs at once (the reference's three calls):
    each map plus ``gamma`` times the terms of its pairings, every term from the pre-update maps.
    Each map is normalised once, and the weighted sums happen inside the matrix products
    (``baddbmm``), not as passes over the maps. ``factor``: the reference's round(1/784, 3)."""

    def __init__(self, factor: float = 0.001) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, maps: Sequence[Tensor], gamma: float = 1.0) -> list[Tensor]:
        flat = [m.flatten(2) for m in maps]
        last = len(maps) - 1
        neg = [_scaled_columns(f, -1.0) if i < last else None for i, f in enumerate(flat)]
        unit = [_scaled_columns(f, 1.0) if i > 0 else None for i, f in enumerate(flat)]
        out, alpha = list(flat), gamma * self.factor
        for i, j in itertools.combinations(range(len(maps)), 2):
            from_i, from_j = _attention(neg[i], unit[j])
            out[j] = torch.baddbmm(out[j], flat[i], from_i, alpha=alpha)
            out[i] = torch.baddbmm(out[i], flat[j], from_j, alpha=alpha)
        return [o.view_as(m) for o, m in zip(out, maps, strict=True)]


class TopKPool(nn.Module):
    """Mean of the k largest values of each channel over all positions."""

    def __init__(self, k: int = 5) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(2)
        return flat.topk(min(self.k, flat.shape[2]), dim=2).values.mean(dim=2)


class FBSD(nn.Module):
    """FBSD on any :class:`Backbone`; ``dropout`` is the university team's p=0.2 before FDM."""

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        strips: tuple[int, int, int] = (8, 4, 2),
        alpha: float = 0.5,
        beta: float = 0.5,
        gamma: float = 1.0,
        fdm_factor: float = 0.001,
        topk: int = 5,
        dropout: float = 0.0,
        feature_size: int = 512,
        part_feature: int = 1024,
        part_loss_weight: float = 2.0,
        concat_loss_weight: float = 1.0,
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.gamma = gamma
        self.part_loss_weight, self.concat_loss_weight = part_loss_weight, concat_loss_weight
        self.fbsm = nn.ModuleList(FBSM(c, k, alpha, beta) for c, k in zip(backbone.channels, strips, strict=True))
        self.conv_blocks = nn.ModuleList(conv_block(c, feature_size, part_feature, bn_momentum)
                                         for c in backbone.channels)
        self.dropout = nn.Dropout(dropout)
        self.fdm = FDM(fdm_factor)
        self.pool = TopKPool(topk)
        self.heads = nn.ModuleList(ClassifierHead(part_feature, feature_size, num_classes) for _ in range(3))
        self.head_concat = ClassifierHead(3 * part_feature, feature_size, num_classes)

    def forward(self, x: Tensor) -> ModelOutput:
        boosted, importances = [], []
        for i, fbsm in enumerate(self.fbsm):
            x = self.backbone.stage(i, x)
            boost, x, importance = fbsm(x)  # the suppressed map feeds the next stage
            boosted.append(boost)
            importances.append(importance)
        att = [self.dropout(block(p)) for block, p in zip(self.conv_blocks, boosted, strict=True)]
        att = self.fdm(att, self.gamma)  # all six terms from the pre-update maps, as in the reference
        pooled = [self.pool(a) for a in att]
        logits = {f"part{i + 1}": head(p) for i, (head, p) in enumerate(zip(self.heads, pooled, strict=True))}
        logits["concat"] = self.head_concat(torch.cat(pooled, dim=1))
        total = logits["part1"] + logits["part2"] + logits["part3"] + logits["concat"]
        return ModelOutput(
            logits=total,
            branch_logits=logits,
            extras={f"strip_importance{i + 1}": b.detach() for i, b in enumerate(importances)},
        )

    def loss(self, output: ModelOutput, target: Tensor, epoch: int | None = None) -> tuple[Tensor, LossTerms]:
        terms = {f"ce_{name}": F.cross_entropy(lg, target) for name, lg in output.branch_logits.items()}
        total = self.part_loss_weight * (terms["ce_part1"] + terms["ce_part2"] + terms["ce_part3"])
        total = total + self.concat_loss_weight * terms["ce_concat"]
        return total, terms

    def explain_forward(self, x: Tensor) -> ModelOutput:
        """``forward`` plus, per stage, the map FBSM scored (``stage_mapN``) and its strip row
        edges (``strip_edgesN``, feature rows) — what ``fgvc explain`` draws."""
        maps: list[Tensor] = []
        hooks = [m.register_forward_hook(lambda _m, inputs, _o: maps.append(inputs[0].detach())) for m in self.fbsm]
        try:
            out = self(x)
        finally:
            for h in hooks:
                h.remove()
        for i, (fmap, fbsm) in enumerate(zip(maps, self.fbsm, strict=True)):
            sizes = strip_sizes(fmap.shape[-2], fbsm.k)
            out.extras[f"stage_map{i + 1}"] = fmap
            out.extras[f"strip_edges{i + 1}"] = torch.tensor([0, *itertools.accumulate(sizes)])
            out.extras[f"stage_stride{i + 1}"] = torch.tensor(self.backbone.strides[i])
        return out


# The authors' names (chaomaer/FBSD 83c4f2f, model.py / backbone.py) -> fgvc's. Their ResNet wrapper ``features``
# registers torchvision's children as ``layer0_2`` = Sequential(conv1, bn1, relu, maxpool, layer1, layer2),
# ``layer3`` = Sequential(layer3), ``layer4`` = Sequential(layer4) (avgpool and fc sit in a plain list: not saved);
# FSBM's ``stripconv`` = Sequential(Conv2d, BatchNorm2d, ReLU); BasicConv has ``conv``/``bn`` attributes.
_AUTHORS_BACKBONE = {"layer0_2.0": "conv1", "layer0_2.1": "bn1", "layer0_2.4": "layer1", "layer0_2.5": "layer2",
                     "layer3.0": "layer3", "layer4.0": "layer4"}
_AUTHORS_STRIP = {"0": "conv", "1": "bn"}


def authors_key(key: str) -> str:
    """One key of the authors' FBSD state dict -> fgvc's (KeyError: not one of theirs)."""
    head, _, rest = key.partition(".")
    if head == "features":
        parts = rest.split(".")
        if parts[0].startswith("strip") and parts[1] == "stripconv":  # features.stripN.stripconv.{0,1}.*
            stage = int(parts[0].removeprefix("strip")) - 1
            return ".".join(["fbsm", str(stage), _AUTHORS_STRIP[parts[2]], *parts[3:]])
        return ".".join(["backbone.body", _AUTHORS_BACKBONE[".".join(parts[:2])], *parts[2:]])
    return authors_block_or_head_key(key)


register_model(ModelSpec(
    "fbsd", FBSD, head_prefixes=("heads.", "head_concat."), default_transform="fbsd", default_input_size=448,
    pictures=(Picture.STRIPS,), extras=("strip_importanceN", "stage_mapN", "strip_edgesN", "stage_strideN"),
    explain_forward=FBSD.explain_forward,
    authors_layout=AuthorsLayout(repository="chaomaer/FBSD", rename=authors_key, container="state_dict"),
))
