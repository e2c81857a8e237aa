"""PIM: the Plug-in Module for fine-grained classification (Chou et al., 2022).

Faithful to the authors' PluginMoodel in its Swin configuration (chou141253/FGVC-PIM, commit 348edd9; Swin-L
at 384 px, fpn_size 1536, num_selects 2048/512/128/32): the backbone's tapped stage outputs go through a
feature pyramid (each projected by Linear-ReLU-Linear to ``fpn_size``, then top-down: a stage's tokens mapped to
the previous stage's token count by a 1x1 Conv1d over the token axis and added); every pyramid level's tokens are
classified (Conv1d-BatchNorm-ReLU-Conv1d, per token); the weakly supervised selector ranks each level's tokens by
their largest softmax probability and keeps the ``num_selects`` most confident (fgvc ranks by that probability's
log-odds, the same order without float32's rounding to 1, equal scores by token index: I9); a graph-convolution combiner
pools all kept tokens into ``total // 32`` joints, mixes them through a learned plus an input-dependent
adjacency and classifies. Prediction is the combiner's logits.

The training loss is the one in their main.py (``loss``): for every level, ``lambda_b`` (0.5) times the
cross-entropy of its token logits averaged over tokens; ``lambda_s`` (0 in their configs) times the
cross-entropy of every selected token; ``lambda_n`` (5) times the mean squared distance of tanh of every
dropped token's logits from -1 (every class pushed towards "not this class"); ``lambda_c`` (1) times the
combiner's cross-entropy. Their ``update_freq`` (2) is fgvc's ``train.accumulate``.

The backbone is described by its taps (``channels`` and ``strides``, as timm's ``feature_info``): a
:class:`~fgvc.models.swin.SwinBackbone` gives four token stages (the authors' Swin); an fgvc CNN
:class:`~fgvc.models.backbones.Backbone` gives its three maps, which go through the authors' CNN variant of the
pyramid (1x1 Conv2d projections, bilinear upsampling). Differences from the authors' code: docs/fidelity.md,
tags I1-I9.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .output import LossTerms, ModelOutput
from .registry import AuthorsLayout, ModelSpec, Picture, register_model

__all__ = ["PIM", "PIMOutput", "GraphCombiner", "authors_key", "RANKINGS", "confidence_log_odds", "descending_order",
           "selector_ranks"]

# the authors' Swin-L selection at 384 px (2304, 576, 144, 144 tokens): 8/9, 8/9, 8/9 and 2/9 of each stage
SWIN_SELECT_SHARE = (8 / 9, 8 / 9, 8 / 9, 2 / 9)
CNN_SELECTS = 32  # their ResNet / EfficientNet builders' default per stage
RANKINGS = ("log_odds", "authors")  # model.options.rank_by (I9)


@dataclass
class PIMOutput(ModelOutput):
    """``ModelOutput`` plus what the loss needs: per level the token logits (B, S, classes), the selected and
    dropped tokens' logits (in the selector's rank order) and the ranks themselves (B, S)."""

    token_logits: list[Tensor] = field(default_factory=list)
    selected_logits: list[Tensor] = field(default_factory=list)
    dropped_logits: list[Tensor] = field(default_factory=list)
    ranks: list[Tensor] = field(default_factory=list)


def confidence_log_odds(logits: Tensor) -> Tensor:
    """(..., S, classes) -> (..., S): ``log(p / (1 - p))`` of each token's largest softmax probability ``p``, computed
    as the top logit minus the log-sum-exp of the others (at least float32). An increasing function of ``p``, so
    the authors' order wherever their ``p`` are distinct; but where float32's ``p`` rounds to 1 (a logit margin of
    about 17 or more), and ``log_softmax``'s maximum to 0, this keeps the margin, so saturated tokens stay apart."""
    x = logits.to(torch.promote_types(logits.dtype, torch.float32))
    top = x.max(dim=-1)
    others = x.scatter(-1, top.indices.unsqueeze(-1), torch.finfo(x.dtype).min)  # one top class out, a tied one stays
    return top.values - torch.logsumexp(others, dim=-1)


def descending_order(score: Tensor) -> Tensor:
    """Indices that sort ``score`` (..., S) in descending order, equal scores by lower index (a stable sort), the same
    in every runtime. ``torch.sort(stable=True)`` has no ONNX conversion, and an unstable sort orders ties as its
    implementation happens to (torch and ONNX Runtime differently); so: one sort for the values (their order needs
    no tie rule), then each token's dense rank among the distinct values times S plus its index — keys that are
    all distinct, which any sort orders alike."""
    n = score.shape[-1]
    values, order = torch.sort(score, dim=-1, descending=True)
    step = (values[..., 1:] != values[..., :-1]).to(torch.int64)
    first = torch.zeros(*score.shape[:-1], 1, dtype=torch.int64, device=score.device)  # also for one token
    dense = torch.cat([first, step], dim=-1).cumsum(-1)  # 0 for the largest value
    dense = torch.zeros_like(dense).scatter(-1, order, dense)  # per token; a tie group gets one rank, whichever order
    index = torch.arange(n, device=score.device)
    return torch.sort(dense * n + index, dim=-1).indices


def selector_ranks(logits: Tensor, rank_by: str = "log_odds") -> Tensor:
    """(B, S, classes) token logits -> (B, S) token indices, most confident first. ``"log_odds"``: by
    :func:`confidence_log_odds`, ties by index (I9); ``"authors"``: their largest softmax probability, one unstable
    sort (I8: the order of ties, which saturation makes common in float32, is the sort's)."""
    with torch.no_grad():
        if rank_by == "authors":
            confidence = torch.softmax(logits, dim=-1).max(dim=-1).values
            return torch.sort(confidence, dim=-1, descending=True).indices
        return descending_order(confidence_log_odds(logits))


class GraphCombiner(nn.Module):
    """The authors' GCNCombiner with an FPN: (B, S', C) selected tokens -> (B, classes)."""

    def __init__(self, total_selects: int, channels: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        joints = total_selects // 32
        self.pool_tokens = nn.Linear(total_selects, joints)
        self.adjacency = nn.Parameter(torch.eye(joints) / 100 + 1 / 100)
        self.conv = nn.Conv1d(channels, channels, 1)
        self.bn = nn.BatchNorm1d(channels)
        self.query = nn.Conv1d(channels, channels // 4, 1)
        self.key = nn.Conv1d(channels, channels // 4, 1)
        self.alpha = nn.Parameter(torch.zeros(1))
        self.pool_joints = nn.Linear(joints, 1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.pool_tokens(tokens.transpose(1, 2))  # (B, C, joints)
        q, k = self.query(h).mean(1), self.key(h).mean(1)  # (B, joints)
        adjacency = self.adjacency + torch.tanh(q.unsqueeze(-1) - k.unsqueeze(1)) * self.alpha
        h = self.bn(torch.matmul(self.conv(h), adjacency))
        h = self.dropout(self.pool_joints(h)).flatten(1)
        return self.classifier(h)


class PIM(nn.Module):
    """PIM on a backbone that describes its taps (``channels``, ``strides``; ``tokens`` for a Swin).

    ``input_size`` (a token backbone only: the pyramid's token mixing is sized by it) defaults to the backbone's
    own; ``fpn_size`` to the last tap's channels (1536 on Swin-L, the authors'); ``num_selects`` (one per tap) to
    the authors' share of each Swin stage (2048/512/128/32 at 384 px) or 32 per CNN stage. ``rank_by``
    ``"log_odds"`` | ``"authors"``: how the selector ranks tokens (:func:`selector_ranks`, I9)."""

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        input_size: int | None = None,
        fpn_size: int | None = None,
        num_selects: Sequence[int] | None = None,
        lambda_b: float = 0.5,
        lambda_s: float = 0.0,
        lambda_n: float = 5.0,
        lambda_c: float = 1.0,
        rank_by: str = "log_odds",
    ) -> None:
        super().__init__()
        if rank_by not in RANKINGS:
            raise ConfigError(f"model.options.rank_by must be one of {', '.join(RANKINGS)}, got {rank_by!r}")
        self.rank_by = rank_by
        self.backbone = backbone
        self.num_classes = num_classes
        self.tokens = bool(getattr(backbone, "tokens", False))
        channels = tuple(int(c) for c in backbone.channels)
        taps = len(channels)
        self.lambdas = {"b": lambda_b, "s": lambda_s, "n": lambda_n, "c": lambda_c}
        fpn = channels[-1] if fpn_size is None else int(fpn_size)
        self.fpn_size = fpn
        counts: list[int] | None = None
        if self.tokens:
            size = backbone.input_size if input_size is None else int(input_size)
            backbone.set_input_size(size)
            counts = backbone.token_counts(size)
            if num_selects is None:
                shares = zip(counts, SWIN_SELECT_SHARE, strict=True)
                num_selects = [max(1, int(round(n * share))) for n, share in shares]
        elif num_selects is None:
            num_selects = [CNN_SELECTS] * taps
        self.num_selects = tuple(int(n) for n in num_selects)
        if len(self.num_selects) != taps:
            raise ConfigError(f"model.options.num_selects: {len(self.num_selects)} values for {taps} backbone stages")
        total = sum(self.num_selects)
        if total < 32:
            raise ConfigError(f"model.options.num_selects: {total} tokens in all make no graph joint "
                              "(the combiner pools every 32 selected tokens into one); select at least 32")
        if counts is not None:
            self._check_counts(counts, f"model.input_size {backbone.input_size}")
        if self.tokens:
            self.proj = nn.ModuleList(
                nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, fpn)) for c in channels)
            self.up = nn.ModuleList(
                nn.Conv1d(counts[i], counts[i - 1], 1) if counts[i] != counts[i - 1] else nn.Identity()
                for i in range(1, taps))
        else:
            self.proj = nn.ModuleList(
                nn.Sequential(nn.Conv2d(c, c, 1), nn.ReLU(), nn.Conv2d(c, fpn, 1)) for c in channels)
        self.token_heads = nn.ModuleList(
            nn.Sequential(nn.Conv1d(fpn, fpn, 1), nn.BatchNorm1d(fpn), nn.ReLU()) for _ in channels)
        self.token_classifiers = nn.ModuleList(nn.Conv1d(fpn, num_classes, 1) for _ in channels)
        self.combiner = GraphCombiner(total, fpn, num_classes)

    def _check_counts(self, counts: Sequence[int], what: str) -> None:
        short = [(i + 1, n, s) for i, (n, s) in enumerate(zip(counts, self.num_selects, strict=True)) if n <= s]
        if short:
            lines = ", ".join(f"stage {i} has {n} tokens for {s} selected" for i, n, s in short)
            raise ConfigError(f"{what}: too small for num_selects {list(self.num_selects)} ({lines}; some must be "
                              "left to drop): a larger model.input_size or smaller model.options.num_selects")

    def pyramid(self, taps: list[Tensor]) -> list[Tensor]:
        """Every tap projected to ``fpn_size`` and top-down summed; tokens (B, S, fpn) or maps (B, fpn, H, W)."""
        hs = [proj(t) for proj, t in zip(self.proj, taps, strict=True)]
        for i in range(len(hs) - 1, 0, -1):
            if self.tokens:
                upper = self.up[i - 1](hs[i])
            else:
                upper = hs[i]
                if upper.shape[-2:] != hs[i - 1].shape[-2:]:
                    upper = F.interpolate(upper, size=hs[i - 1].shape[-2:], mode="bilinear", align_corners=False)
            hs[i - 1] = upper + hs[i - 1]
        return hs

    def forward(self, x: Tensor) -> PIMOutput:
        hs = self.pyramid(self.backbone(x))
        if not self.tokens:
            hs = [h.flatten(2).transpose(1, 2) for h in hs]  # (B, H·W, fpn), row-major as theirs
            self._check_counts([h.shape[1] for h in hs], f"model.input_size ({tuple(x.shape[-2:])} px input)")
        out = PIMOutput(logits=x.new_empty(0))
        selected = []
        for i, h in enumerate(hs):
            logits = self.token_classifiers[i](self.token_heads[i](h.transpose(1, 2))).transpose(1, 2)
            ranks = selector_ranks(logits, self.rank_by)
            n = self.num_selects[i]
            keep, drop = ranks[:, :n], ranks[:, n:]
            classes = logits.shape[-1]
            out.token_logits.append(logits)
            out.ranks.append(ranks)
            out.selected_logits.append(logits.gather(1, keep.unsqueeze(-1).expand(-1, -1, classes)))
            out.dropped_logits.append(logits.gather(1, drop.unsqueeze(-1).expand(-1, -1, classes)))
            selected.append(h.gather(1, keep.unsqueeze(-1).expand(-1, -1, h.shape[-1])))
            out.branch_logits[f"layer{i + 1}"] = logits.mean(1)
        out.logits = self.combiner(torch.cat(selected, dim=1))
        out.branch_logits["combiner"] = out.logits
        return out

    def loss(self, output: ModelOutput, target: Tensor, epoch: int | None = None) -> tuple[Tensor, LossTerms]:
        """main.py's loss, its terms added in their order (levels, then per level selected and dropped tokens,
        then the combiner); a term whose weight is 0 is neither computed nor logged, as theirs."""
        assert isinstance(output, PIMOutput)
        lam = self.lambdas
        terms: LossTerms = {}
        total: Tensor | float = 0.0
        if lam["b"] != 0:
            for i, logits in enumerate(output.token_logits):
                terms[f"ce_layer{i + 1}"] = F.cross_entropy(logits.mean(1), target)
                total = total + lam["b"] * terms[f"ce_layer{i + 1}"]
        for i, (sel, drop) in enumerate(zip(output.selected_logits, output.dropped_logits, strict=True)):
            if lam["s"] != 0:
                ce = F.cross_entropy(sel.reshape(-1, sel.shape[-1]), target.repeat_interleave(sel.shape[1]))
                terms[f"ce_select{i + 1}"] = ce
                total = total + lam["s"] * ce
            if lam["n"] != 0:
                squashed = torch.tanh(drop.reshape(-1, drop.shape[-1]))
                terms[f"drop{i + 1}"] = F.mse_loss(squashed, torch.full_like(squashed, -1.0))
                total = total + lam["n"] * terms[f"drop{i + 1}"]
        if lam["c"] != 0:
            terms["ce_combiner"] = F.cross_entropy(output.logits, target)
            total = total + lam["c"] * terms["ce_combiner"]
        if not isinstance(total, Tensor):
            raise ConfigError("model.options: every PIM loss weight (lambda_b, lambda_s, lambda_n, lambda_c) is 0")
        return total, terms


# -- the authors' checkpoint ---------------------------------------------------------------------------

_COMBINER = {"param_pool0": "pool_tokens", "adj1": "adjacency", "conv1": "conv", "batch_norm1": "bn",
             "conv_q1": "query", "conv_k1": "key", "alpha1": "alpha", "param_pool1": "pool_joints",
             "classifier": "classifier"}
_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_SWIN_BLOCK = ("norm1.", "attn.qkv.", "attn.proj.", "attn.relative_position_bias_table", "norm2.", "mlp.fc1.",
               "mlp.fc2.")


def authors_key(key: str) -> str | None:
    """The authors' PluginMoodel key (Swin configuration) -> fgvc's. Their vendored Swin ends a stage with its
    patch merging where timm's begins the next with it; their Swin's constant buffers (relative position index,
    shifted-window mask) are recomputed by timm; its final norm and ImageNet-22k classifier are never used."""
    parts = key.split(".")
    head = parts[0]
    if head == "backbone":
        rest = ".".join(parts[1:])
        if parts[1] in ("norm", "head"):
            return None
        if parts[1] == "patch_embed":
            return f"backbone.body.{rest}"
        if parts[1] == "layers":
            stage, kind = int(parts[2]), parts[3]
            tail = ".".join(parts[4:])
            if kind == "downsample" and parts[4] in ("norm", "reduction"):
                return f"backbone.body.layers.{stage + 1}.downsample.{tail}"
            if kind == "blocks":
                inner = ".".join(parts[5:])
                if inner in ("attn.relative_position_index", "attn_mask"):
                    return None
                if inner.startswith(_SWIN_BLOCK):
                    return f"backbone.body.layers.{stage}.blocks.{parts[4]}.{inner}"
        raise KeyError(key)
    leaf = parts[-1]
    if head == "fpn" and len(parts) >= 3:
        name, tail = parts[1], ".".join(parts[2:])
        if name.startswith("Proj_layer") and tail in ("0.weight", "0.bias", "2.weight", "2.bias"):
            return f"proj.{int(name.removeprefix('Proj_layer')) - 1}.{tail}"
        if name.startswith("Up_layer") and tail in ("weight", "bias"):
            return f"up.{int(name.removeprefix('Up_layer')) - 2}.{tail}"
    if head.startswith("fpn_classifier_layer") and len(parts) == 3 and leaf in _LEAVES:
        i = int(head.removeprefix("fpn_classifier_layer")) - 1
        if parts[1] == "3" and leaf in ("weight", "bias"):
            return f"token_classifiers.{i}.{leaf}"
        if parts[1] in ("0", "1"):
            return f"token_heads.{i}.{parts[1]}.{leaf}"
    if head == "combiner" and len(parts) >= 2 and parts[1] in _COMBINER and (
            (parts[1] in ("adj1", "alpha1") and len(parts) == 2) or (len(parts) == 3 and leaf in _LEAVES)):
        return ".".join(["combiner", _COMBINER[parts[1]], *parts[2:]])
    raise KeyError(key)


def explain_forward(model: PIM, x: Tensor) -> PIMOutput:
    """``forward`` plus, per tapped stage, the tokens its selector keeps, on the stage's grid (``heatmapN``: 1 where a
    token is selected) — what the combiner reads."""
    out = model(x)
    h, w = x.shape[-2:]
    for i, (ranks, n, stride) in enumerate(zip(out.ranks, model.num_selects, model.backbone.strides, strict=True)):
        grid = (-(-h // stride), -(-w // stride))  # rounded up, as strided convolutions round (Swin's tile exactly)
        chosen = torch.zeros(ranks.shape, dtype=x.dtype, device=x.device).scatter_(1, ranks[:, :n], 1.0)
        out.extras[f"heatmap{i + 1}"] = chosen.view(-1, *grid)
    return out


register_model(ModelSpec(
    "pim", PIM, head_prefixes=("token_classifiers.", "combiner.classifier."), default_transform="pim",
    default_input_size=384, input_size_option="input_size",
    pictures=(Picture.HEATMAPS,), extras=("heatmapN",), explain_forward=explain_forward,
    heatmap_titles=("stage 1: selected tokens", "stage 2: selected tokens", "stage 3: selected tokens",
                    "stage 4: selected tokens"),
    authors_layout=AuthorsLayout(
        repository="chou141253/FGVC-PIM", rename=authors_key, container="state_dict_key",
        dropped="backbone.norm.*, backbone.head.*: their Swin's final norm and ImageNet-22k classifier, never used "
                "by its forward; backbone.layers.*.blocks.*.attn.relative_position_index and .attn_mask: constant "
                "buffers timm recomputes"),
))
