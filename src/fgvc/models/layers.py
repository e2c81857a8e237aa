"""Small building blocks shared by the FGVC heads."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BatchNorm1dAnyBatch", "ClassifierHead"]


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
