"""A narrow ResNet (torchvision's Bottleneck blocks, fewer channels and blocks) as an fgvc :class:`Backbone`.

The parity tests' golden data come from the authors' code on the same reduced architecture: their ResNet's
module names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``, each block's ``conv1``/``bn1``/.../``downsample``)
with ``planes`` channels per stage instead of 64/128/256/512 and ``blocks`` blocks instead of 3/4/6/3 — the same
code path at a few hundred kilobytes of weights. ``last_stride=1`` is CAL's ResNet (layer4 keeps stride 16).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchvision.models.resnet import Bottleneck

from fgvc.models.backbones import Backbone


class NarrowResNet(nn.Module):
    def __init__(self, planes: Sequence[int] = (4, 8, 16, 32), blocks: Sequence[int] = (1, 1, 1, 1),
                 stem: int | None = None) -> None:
        super().__init__()
        stem = planes[0] if stem is None else stem
        self.inplanes = stem
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, (p, n) in enumerate(zip(planes, blocks, strict=True)):
            setattr(self, f"layer{i + 1}", self._layer(p, n, 1 if i == 0 else 2))

    def _layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, out, 1, stride=stride, bias=False),
                                       nn.BatchNorm2d(out))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = out
        layers += [Bottleneck(out, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)


def narrow_resnet(planes: Sequence[int] = (4, 8, 16, 32), blocks: Sequence[int] = (1, 1, 1, 1)) -> Backbone:
    """The narrow ResNet as a Backbone, units and stage ends as fgvc's ResNet backbones have them."""
    net = NarrowResNet(planes, blocks)
    last = [f"layer4.{i}" for i in range(len(net.layer4))]
    units = [("conv1",), ("bn1",), ("relu",), ("maxpool",), ("layer1",), ("layer2",), ("layer3",)]
    units += [(u,) for u in last]
    channels = tuple(p * Bottleneck.expansion for p in planes[1:])
    return Backbone(net, units, (6, 7, 7 + len(last)), channels, "narrow_resnet")  # type: ignore[arg-type]

