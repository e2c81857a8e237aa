"""PMG: Progressive Multi-Granularity training of jigsaw patches (Du et al., ECCV 2020).

Faithful to the authors' code (PRIS-CV/PMG-Progressive-Multi-Granularity-Training, commit db7a7d7): the
stride-8/16/32 maps of a ResNet-50 each go through a 1x1 -> 3x3 conv block (BatchNorm momentum 0.01) and a
global max pool into a head (BN1d -> Linear -> BN1d -> ELU -> Linear, as FBSD's, which derives from PMG); a
fourth head classifies the three pooled vectors concatenated. A training iteration is four passes, each with
its own loss and optimiser step (:func:`pmg_train_passes`): the image cut into 8x8, 4x4 and 2x2 shuffled
patches scored by the stride-8, -16 and -32 heads, then the whole image scored by the concatenation head with
weight 2. Prediction is the sum of the four heads (the authors' "combined" accuracy, the one they select on).

Differences from the authors' code (docs/fidelity.md, tags P1-P6):
  * P1 — the pools are global max pools (``adaptive_max_pool2d``); the authors' MaxPool2d(56/28/14) equals
    that at 448 px only and crashes elsewhere. Any input from 32 px works (a training batch of one from 64 px:
    the ResNet's train-mode BatchNorm needs more than one value per channel).
  * P2 — the jigsaw cuts the actual input: patches of ``H // n`` by ``W // n`` pixels, and the rows and columns
    beyond ``n`` whole patches (when n does not divide the size) stay where they are. The authors' patches
    are ``448 // n`` whatever the input. The permutation is drawn exactly as theirs (``random.shuffle`` of
    the patch list, then the patch at the top-left swapped with each listed patch in turn), so a seeded run
    shuffles identically; it is applied as one gather, not n² copies.
  * P3 — under PyTorch >= 2.0 the authors' ``optimizer.zero_grad()`` leaves the heads a pass does not use
    without a gradient, so SGD skips them (no weight decay, no momentum) in that pass; the PyTorch 1.x they
    wrote it for zeroed them and decayed every head in every pass. fgvc does what their code does today.
  * P4 — a training pass returns only the head it trains (every head still runs, so every BatchNorm moves as
    in theirs): DDP then knows which parameters a pass leaves out. The training accuracy is the
    concatenation head's on the whole image and the logged loss the sum of the four passes', as theirs.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import Backbone
from .layers import ClassifierHead, authors_block_or_head_key, conv_block
from .output import LossTerms, ModelOutput, TrainPass
from .registry import AuthorsLayout, ModelSpec, Picture, register_model

__all__ = ["PMG", "jigsaw_permutation", "jigsaw", "pmg_train_passes", "pooled_positions"]


def jigsaw_permutation(n: int, shuffle: Callable[[list], None] = random.shuffle) -> list[int]:
    """Which source patch lands at each of the n² positions (row-major), drawn as the authors draw it:
    shuffle the list of (row, column) patches, then swap the top-left patch with each listed patch in turn."""
    order = [[a, b] for a in range(n) for b in range(n)]
    shuffle(order)
    perm = list(range(n * n))
    for a, b in order:
        j = a * n + b
        perm[0], perm[j] = perm[j], perm[0]
    return perm


def jigsaw(images: Tensor, n: int, perm: list[int] | None = None) -> Tensor:
    """``images`` (B, C, H, W) cut into n x n patches of ``H // n`` x ``W // n`` pixels and rearranged by
    ``perm`` (default: :func:`jigsaw_permutation`'s draw); pixels beyond the whole patches stay (P2)."""
    b, c, h, w = images.shape
    ph, pw = h // n, w // n
    if ph == 0 or pw == 0:
        raise ValueError(f"an input of {h}x{w} pixels cannot be cut into {n}x{n} patches")
    perm = jigsaw_permutation(n) if perm is None else perm
    index = torch.tensor(perm, device=images.device)
    grid = images[:, :, : n * ph, : n * pw].reshape(b, c, n, ph, n, pw).permute(0, 1, 2, 4, 3, 5)
    shuffled = grid.reshape(b, c, n * n, ph, pw).index_select(2, index)
    shuffled = shuffled.reshape(b, c, n, n, ph, pw).permute(0, 1, 2, 4, 3, 5).reshape(b, c, n * ph, n * pw)
    if n * ph == h and n * pw == w:
        return shuffled
    out = images.clone()
    out[:, :, : n * ph, : n * pw] = shuffled
    return out


_ALL = ({0, 1, 2}, {0, 1, 2}, {"part1", "part2", "part3", "concat"})
_GRAPH_PARTS: dict[str | None, tuple[set[int], set[int], set[str]]] = {
    None: _ALL, "concat": _ALL,
    "part1": ({0}, {0}, {"part1"}), "part2": ({0, 1}, {1}, {"part2"}), "part3": ({0, 1, 2}, {2}, {"part3"}),
}


def _recording(needed: bool) -> contextlib.AbstractContextManager:
    """Record the autograd graph only where a loss can reach (a no-op under ``torch.no_grad`` already)."""
    return contextlib.nullcontext() if needed else torch.no_grad()


class PMG(nn.Module):
    """PMG on any :class:`Backbone`. ``part_feature`` (the conv blocks' output, the authors' 1024 = 2048 / 2)
    defaults to half the last stage's channels; ``granularities`` are the jigsaw grids of the three passes."""

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        *,
        feature_size: int = 512,
        part_feature: int | None = None,
        granularities: tuple[int, int, int] = (8, 4, 2),
        part_loss_weight: float = 1.0,
        concat_loss_weight: float = 2.0,
        bn_momentum: float = 0.01,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.num_classes = num_classes
        self.granularities = tuple(granularities)
        self.part_loss_weight, self.concat_loss_weight = part_loss_weight, concat_loss_weight
        part = backbone.channels[2] // 2 if part_feature is None else part_feature
        self.conv_blocks = nn.ModuleList(
            conv_block(c, feature_size, part, bn_momentum) for c in backbone.channels
        )
        self.heads = nn.ModuleList(ClassifierHead(part, feature_size, num_classes) for _ in range(3))
        self.head_concat = ClassifierHead(3 * part, feature_size, num_classes)

    def forward(self, x: Tensor, head: str | None = None) -> ModelOutput:
        """Every head's logits and their sum. ``head`` (a training pass): every head still runs — their
        BatchNorm statistics move in every pass, as in the authors' code — but what that head's loss cannot reach
        (later stages, other conv blocks and heads) runs without recording a graph, and only that head's logits
        are returned, so DDP sees the other heads' parameters as unused in this pass. Same numbers either way."""
        graph = _GRAPH_PARTS[head]  # (stages, blocks, heads) whose outputs the loss reaches
        maps, h = [], x
        for i in range(3):
            with _recording(i in graph[0]):
                h = self.backbone.stage(i, h)
            maps.append(h)
        pooled = []
        for i, (block, m) in enumerate(zip(self.conv_blocks, maps, strict=True)):
            # a global max pool with indices, as the authors' MaxPool2d: the backward routes each channel's
            # gradient to one position (amax's spreads it over ties through full-size masks: slower)
            with _recording(i in graph[1]):
                pooled.append(F.adaptive_max_pool2d(block(m), 1).flatten(1))
        logits = {}
        for i, h_i in enumerate(self.heads):
            with _recording(f"part{i + 1}" in graph[2]):
                logits[f"part{i + 1}"] = h_i(pooled[i])
        with _recording("concat" in graph[2]):
            logits["concat"] = self.head_concat(torch.cat(pooled, dim=1))
        if head is not None:
            return ModelOutput(logits=logits[head], branch_logits={head: logits[head]})
        total = logits["part1"] + logits["part2"] + logits["part3"] + logits["concat"]
        return ModelOutput(logits=total, branch_logits=logits)

    def loss(self, output: ModelOutput, target: Tensor, epoch: int | None = None) -> tuple[Tensor, LossTerms]:
        """Evaluation's loss: the concatenation head's cross-entropy (the authors' test loss); every head's
        cross-entropy is logged."""
        terms = {f"ce_{name}": F.cross_entropy(lg, target) for name, lg in output.branch_logits.items()}
        return terms["ce_concat"], terms


def pooled_positions(fmap: Tensor) -> Tensor:
    """(B, h, w): the share of channels whose global maximum — what the max pool passes to the head — lies at
    each position. Where a head looks, exactly as its pooling sees it."""
    b, c, h, w = fmap.shape
    counts = F.one_hot(fmap.flatten(2).argmax(dim=2), h * w).sum(dim=1)
    return (counts.to(fmap.dtype) / c).view(b, h, w)


def explain_forward(model: PMG, x: Tensor) -> ModelOutput:
    """``forward`` plus, per granularity, :func:`pooled_positions` of its conv block (``heatmap1..3``)."""
    maps: list[Tensor] = []
    hooks = [block.register_forward_hook(lambda _m, _i, out: maps.append(out.detach())) for block in model.conv_blocks]
    try:
        out = model(x)
    finally:
        for h in hooks:
            h.remove()
    for i, fmap in enumerate(maps):
        out.extras[f"heatmap{i + 1}"] = pooled_positions(fmap)
    return out


def pmg_train_passes(model: nn.Module, forward: Callable[[Tensor], ModelOutput], x: Tensor, y: Tensor,
                     epoch: int) -> Iterator[TrainPass]:
    """The four passes of one PMG iteration, each followed by an optimiser step: the shuffled images at each
    granularity scored by that granularity's head, then the whole image by the concatenation head."""
    assert isinstance(model, PMG)
    for i, n in enumerate(model.granularities):
        out = forward(jigsaw(x, n), head=f"part{i + 1}")
        ce = F.cross_entropy(out.logits, y)
        yield TrainPass(out, ce * model.part_loss_weight, {f"ce_part{i + 1}": ce}, step=True)
    out = forward(x, head="concat")
    ce = F.cross_entropy(out.logits, y)
    yield TrainPass(out, ce * model.concat_loss_weight, {"ce_concat": ce}, step=True)


def authors_key(key: str) -> str | None:
    """The authors' PMG key -> fgvc's: ``features`` is their whole ResNet (its ``fc`` is unused: dropped),
    ``conv_blockN.{0,1}.{conv,bn}`` and ``classifierN``/``classifier_concat`` Sequentials."""
    head, _, rest = key.partition(".")
    if head == "features":
        top, _, tail = rest.partition(".")
        if top == "fc":
            return None
        return f"backbone.body.{top}.{tail}"
    return authors_block_or_head_key(key)


register_model(ModelSpec(
    "pmg", PMG, head_prefixes=("heads.", "head_concat."), default_transform="fbsd", default_input_size=448,
    train_passes=pmg_train_passes, unused_parameters=True,
    pictures=(Picture.HEATMAPS,), extras=("heatmapN",), explain_forward=explain_forward,
    heatmap_titles=("8×8 head: channel peaks", "4×4 head: channel peaks", "2×2 head: channel peaks"),
    authors_layout=AuthorsLayout(
        repository="PRIS-CV/PMG-Progressive-Multi-Granularity-Training", rename=authors_key,
        container="pickled_module", dropped="features.fc.*: their ResNet's ImageNet classifier, never used"),
))
