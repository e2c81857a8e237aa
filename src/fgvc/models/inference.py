"""Inference-only preparation of a trained model: BatchNorm folded into its convolution, channels_last.

Once training is over a BatchNorm layer is a fixed per-channel affine map, yet on a CPU it still
costs a full pass over its activation: 13% of a ResNet-50 eval forward at batch 1 and 25% at
batch 32 (448 px, 2 cores; BENCHMARKS.md). Folding it into the weights of the convolution that
feeds it removes that pass, and channels_last spares oneDNN (and cuDNN's tensor cores) a reorder
of every activation. Outputs equal the unfolded model's within float rounding (tests pin 1e-4).

Only pairs where the convolution's output goes *only* into the BatchNorm are folded, found
structurally: consecutive children of an ``nn.Sequential``, ``convN``/``bnN`` of torchvision's
ResNet blocks, and consecutive units of a :class:`Backbone`; other layouts (EfficientNet-Lite's
``_bn0`` after ``_expand_conv``, timm's BatchNormAct2d) stay unfolded and only change memory format.
The model is changed in place and must not be trained afterwards (the folded BatchNorms are gone).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval
from torchvision.models.resnet import BasicBlock, Bottleneck

from .backbones import Backbone
from .output import LossTerms, ModelOutput

__all__ = ["conv_bn_pairs", "fold_batch_norms", "InferenceModel", "prepare_for_inference"]


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    # exact types: subclasses such as timm's BatchNormAct2d also apply an activation
    return (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats
            and bn.running_mean is not None and bn.num_features == conv.out_channels)


def conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """Qualified names of (convolution, BatchNorm) pairs whose convolution feeds only that BatchNorm."""
    pairs: list[tuple[str, str]] = []
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            pairs += [(prefix + a, prefix + b) for (a, conv), (b, bn) in zip(children, children[1:], strict=False)
                      if _foldable(conv, bn)]
        elif isinstance(module, BasicBlock | Bottleneck):
            for i in (1, 2, 3):
                conv, bn = getattr(module, f"conv{i}", None), getattr(module, f"bn{i}", None)
                if conv is not None and bn is not None and _foldable(conv, bn):
                    pairs.append((f"{prefix}conv{i}", f"{prefix}bn{i}"))
        elif isinstance(module, Backbone):
            names = module.unit_names
            for a, b in zip(names, names[1:], strict=False):
                if len(a) == 1 and len(b) == 1:
                    conv, bn = module.body.get_submodule(a[0]), module.body.get_submodule(b[0])
                    if _foldable(conv, bn):
                        pairs.append((f"{prefix}body.{a[0]}", f"{prefix}body.{b[0]}"))
    return list(dict.fromkeys(pairs))  # a Backbone whose body is a Sequential is seen by two rules


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, new)


@torch.no_grad()
def fold_batch_norms(model: nn.Module) -> int:
    """Fold every :func:`conv_bn_pairs` pair in place (the model is put in eval mode); returns how many."""
    model.eval()
    pairs = conv_bn_pairs(model)
    for conv_name, bn_name in pairs:
        fused = fuse_conv_bn_eval(model.get_submodule(conv_name), model.get_submodule(bn_name))
        _replace(model, conv_name, fused)
        _replace(model, bn_name, nn.Identity())
    for module in model.modules():
        if isinstance(module, Backbone):
            module.refresh_units()
    return len(pairs)


class InferenceModel(nn.Module):
    """A prepared model that hands it inputs in its memory format; ``loss`` is the model's own."""

    def __init__(self, model: nn.Module, memory_format: torch.memory_format) -> None:
        super().__init__()
        self.model = model
        self.memory_format = memory_format

    def forward(self, x: Tensor) -> ModelOutput:
        return self.model(x.contiguous(memory_format=self.memory_format))

    def loss(self, output: ModelOutput, target: Tensor, epoch: int | None = None) -> tuple[Tensor, LossTerms]:
        return self.model.loss(output, target, epoch)


def prepare_for_inference(model: nn.Module, channels_last: bool = True, fold: bool = True) -> InferenceModel:
    """Eval mode, BatchNorm folded (``fold``) and weights in channels_last (``channels_last``), in place."""
    model.eval()
    if fold:
        fold_batch_norms(model)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model.to(memory_format=memory_format)
    return InferenceModel(model, memory_format).eval()
