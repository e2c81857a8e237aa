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
  * F6 — alpha, beta, gamma, the FDM factor, top-k and dropout are constructor arguments.
  * F7 — the BatchNorm1d layers of the heads accept a training batch of one (see layers.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import Backbone
from .layers import ClassifierHead
from .output import LossTerms, ModelOutput

__all__ = ["FBSM", "FDM", "TopKPool", "BasicConv", "FBSD", "strip_sizes"]


def strip_sizes(height: int, k: int) -> list[int]:
    """Rows per strip, ``torch.tensor_split`` style: the first ``height % k`` strips get one more."""
    if height < k:
        raise ValueError(
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
            row_strip = torch.repeat_interleave(torch.arange(self.k), torch.tensor(sizes))
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


def fdm(a: Tensor, b: Tensor, factor: float) -> tuple[Tensor, Tensor]:
    """Feature diversification between two maps (REFERENCE §1.4): returns the terms added to
    ``a`` and to ``b``. Each position attends to the *least* similar positions of the other map."""
    batch, channels = a.shape[:2]
    fa, fb = a.flatten(2), b.flatten(2)  # (B, C, S), (B, C, M)
    sim = -torch.bmm(F.normalize(fa, dim=1).transpose(1, 2), F.normalize(fb, dim=1))  # (B, S, M)
    to_b = torch.bmm(fa, torch.softmax(sim, dim=1))  # (B, C, M): columns of P sum to 1 over S
    to_a = torch.bmm(fb, torch.softmax(sim.transpose(1, 2), dim=1))  # (B, C, S)
    return factor * to_a.view_as(a), factor * to_b.view_as(b)


class FDM(nn.Module):
    """Parameter-free module wrapper of :func:`fdm` (factor: the reference's round(1/784, 3))."""

    def __init__(self, factor: float = 0.001) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        return fdm(a, b, self.factor)


class TopKPool(nn.Module):
    """Mean of the k largest values of each channel over all positions."""

    def __init__(self, k: int = 5) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(2)
        return flat.topk(min(self.k, flat.shape[2]), dim=2).values.mean(dim=2)


class BasicConv(nn.Sequential):
    """Conv (no bias) -> BatchNorm (momentum 0.01, as the authors) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bn_momentum: float = 0.01) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels, eps=1e-5, momentum=bn_momentum),
            nn.ReLU(inplace=True),
        )


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
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.gamma = gamma
        self.part_loss_weight, self.concat_loss_weight = part_loss_weight, concat_loss_weight
        self.fbsm = nn.ModuleList(FBSM(c, k, alpha, beta) for c, k in zip(backbone.channels, strips, strict=True))
        self.conv_blocks = nn.ModuleList(
            nn.Sequential(BasicConv(c, feature_size, 1), BasicConv(feature_size, part_feature, 3))
            for c in backbone.channels
        )
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
        # All six FDM terms come from the pre-update maps, as in the reference.
        d12, d21 = self.fdm(att[0], att[1])
        d13, d31 = self.fdm(att[0], att[2])
        d23, d32 = self.fdm(att[1], att[2])
        att = [att[0] + self.gamma * (d12 + d13), att[1] + self.gamma * (d21 + d23), att[2] + self.gamma * (d31 + d32)]
        pooled = [self.pool(a) for a in att]
        logits = {f"part{i + 1}": head(p) for i, (head, p) in enumerate(zip(self.heads, pooled, strict=True))}
        logits["concat"] = self.head_concat(torch.cat(pooled, dim=1))
        total = logits["part1"] + logits["part2"] + logits["part3"] + logits["concat"]
        return ModelOutput(
            logits=total,
            branch_logits=logits,
            extras={f"strip_importance{i + 1}": b.detach() for i, b in enumerate(importances)},
        )

    def loss(self, output: ModelOutput, target: Tensor, epoch: int = 0) -> tuple[Tensor, LossTerms]:
        terms = {f"ce_{name}": F.cross_entropy(lg, target) for name, lg in output.branch_logits.items()}
        total = self.part_loss_weight * (terms["ce_part1"] + terms["ce_part2"] + terms["ce_part3"])
        total = total + self.concat_loss_weight * terms["ce_concat"]
        return total, terms

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """"new" (FBSM, conv blocks, heads; lr 0.002 in the recipe) and "backbone" (lr 0.0002)."""
        backbone = list(self.backbone.parameters())
        ids = {id(p) for p in backbone}
        return {"new": [p for p in self.parameters() if id(p) not in ids], "backbone": backbone}
