"""Small building blocks shared by the FGVC heads."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BatchNorm1dAnyBatch", "ClassifierHead", "BasicConv", "conv_block", "authors_block_or_head_key"]


class BatchNorm1dAnyBatch(nn.BatchNorm1d):
    """BatchNorm1d that accepts a training batch of one (REFERENCE F7).

    PyTorch refuses train-mode BN on one sample ("Expected more than 1 value per channel"); a
    dataset of size ``k * batch + 1`` then crashes on its last batch. With one sample there are no
    batch statistics to compute, so this normalises with the running statistics and leaves them
    unchanged; larger batches behave exactly like ``nn.BatchNorm1d``. The branch is on the
    tensor's shape, never on its values, so it costs no device synchronisation.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


class ClassifierHead(nn.Sequential):
    """FBSD's classifier: BN1d -> Linear(in, hidden) -> BN1d -> ELU -> Linear(hidden, classes)."""

    def __init__(self, in_features: int, hidden: int, num_classes: int) -> None:
        super().__init__(
            BatchNorm1dAnyBatch(in_features),
            nn.Linear(in_features, hidden),
            BatchNorm1dAnyBatch(hidden),
            nn.ELU(inplace=True),
            nn.Linear(hidden, num_classes),
        )


class BasicConv(nn.Sequential):
    """Conv (no bias) -> BatchNorm (momentum 0.01, as the authors) -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bn_momentum: float = 0.01) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.BatchNorm2d(out_channels, eps=1e-5, momentum=bn_momentum),
            nn.ReLU(inplace=True),
        )


def conv_block(in_channels: int, hidden: int, out_channels: int, bn_momentum: float) -> nn.Sequential:
    """A stage's 1x1 -> 3x3 :class:`BasicConv` pair before its head (FBSD and PMG, which share the authors' design)."""
    return nn.Sequential(BasicConv(in_channels, hidden, 1, bn_momentum),
                         BasicConv(hidden, out_channels, 3, bn_momentum))


_AUTHORS_BASIC_CONV = {"conv": "0", "bn": "1"}  # the authors' BasicConv attributes -> this Sequential's indices


def authors_block_or_head_key(key: str) -> str:
    """FBSD's and PMG's authors name their conv blocks and heads alike: ``conv_blockN.{0,1}.{conv,bn}.*``,
    ``classifierN.*`` and ``classifier_concat.*`` (N = 1, 2, 3) -> fgvc's ``conv_blocks``, ``heads`` and
    ``head_concat``; KeyError for any other key."""
    head, _, rest = key.partition(".")
    if head.startswith("conv_block"):
        stage = int(head.removeprefix("conv_block")) - 1
        step, layer, *tail = rest.split(".")
        return ".".join(["conv_blocks", str(stage), str(int(step)), _AUTHORS_BASIC_CONV[layer], *tail])
    if head == "classifier_concat":
        return f"head_concat.{rest}"
    if head.startswith("classifier"):
        return f"heads.{int(head.removeprefix('classifier')) - 1}.{rest}"
    raise KeyError(key)
