"""Swin Transformer backbones that hand PIM the four stage outputs as tokens (timm's SwinTransformer inside).

PIM's authors (chou141253/FGVC-PIM) edited the Swin of the timm 0.4.12 they vendor so that its forward returns
``{"layer1": ..., "layer4": ...}``: the output of each of the four stages, each stage ending in its patch merging
(so ``layer1`` has stride 8 and twice the embedding width, ``layer3`` and ``layer4`` both stride 32), with neither
the final LayerNorm nor the classifier applied. :class:`SwinBackbone` computes the same from the installed timm's
``SwinTransformer``, whose stages begin with the merging instead: ``layer1`` is the first stage followed by the
second stage's merging, and so on. The tensors are the same ones (fgvc's parity test runs the authors' module).

Input sizes: the authors' Swin partitions each stage's grid into whole windows, so a stage of resolution ``r``
needs ``r <= window`` (one window, no shift) or ``r`` a multiple of the window; with three 2x2 mergings the input
is a multiple of 32. Other sizes are refused (:meth:`SwinBackbone.check_size`), not padded as timm would.

``pretrained``: True downloads timm's weights (``swin_l384``: ``swin_large_patch4_window12_384.ms_in22k``, the
ImageNet-22k file the authors load); a path loads that file through timm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor, nn

from ..errors import ConfigError
from .registry import BackboneSpec, register_backbone

__all__ = ["SwinBackbone", "swin_backbone", "SWIN_VARIANTS"]

# fgvc backbone name -> (timm model name with its pretrained tag, input size the weights were trained at)
SWIN_VARIANTS = {
    "swin_l384": ("swin_large_patch4_window12_384.ms_in22k", 384),
    "swin_t": ("swin_tiny_patch4_window7_224.ms_in1k", 224),
}


class SwinBackbone(nn.Module):
    """``forward(x)`` -> the four stage outputs as (B, H·W, C) tokens, row-major as the authors' ``view``.

    ``channels`` and ``strides`` describe the taps (as timm's ``feature_info``); ``tokens`` tells PIM that the
    outputs are token sequences whose count depends on the input size (:meth:`token_counts`)."""

    tokens = True

    def __init__(self, body: nn.Module, name: str, input_size: int) -> None:
        super().__init__()
        # the final norm and the classifier are never used by the authors' forward: not kept
        body.norm = nn.Identity()
        body.head = nn.Identity()
        self.body = body
        self.name = name
        self.patch = int(body.patch_embed.patch_size[0])
        self.window = int(body._ref_window_sizes[0][0])
        dims = [int(stage.blocks[-1].norm1.normalized_shape[0]) for stage in body.layers]
        if len(dims) != 4:
            raise ConfigError(f"model.backbone: {name!r} has {len(dims)} stages; PIM's Swin taps four")
        self.channels = (dims[1], dims[2], dims[3], dims[3])
        self.strides = (self.patch * 2, self.patch * 4, self.patch * 8, self.patch * 8)
        self.input_size = int(input_size)

    def sizes_that_work(self, limit: int = 1024) -> list[int]:
        return [s for s in range(self.patch * 8, limit + 1, self.patch * 8) if self._fits(s)]

    def _fits(self, size: int) -> bool:
        if size % (self.patch * 8):
            return False
        grids = [size // (self.patch * 2 ** i) for i in range(4)]
        return all(r <= self.window or r % self.window == 0 for r in grids)

    def check_size(self, size: int) -> None:
        if not self._fits(size):
            works = ", ".join(map(str, self.sizes_that_work()))
            raise ConfigError(f"model.input_size: {size} does not split into {self.name}'s {self.window}-token "
                              f"windows at every stage; sizes that work (up to 1024): {works}")

    def set_input_size(self, size: int) -> None:
        """Rebuild the windows, shifts and masks for a ``size`` px input (the windows keep their size, clamped to
        a stage's resolution where that is smaller, as the authors' Swin does)."""
        self.check_size(size)
        if size != self.input_size:
            self.body.set_input_size(img_size=(size, size), window_size=self.window)
            self.input_size = int(size)

    def token_counts(self, size: int | None = None) -> list[int]:
        size = self.input_size if size is None else size
        return [(size // s) ** 2 for s in self.strides]

    def forward(self, x: Tensor) -> list[Tensor]:
        if x.shape[-2:] != (self.input_size, self.input_size):
            raise ConfigError(f"model.input_size: this model was built for {self.input_size} px inputs, "
                              f"got {tuple(x.shape[-2:])}")
        body = self.body
        x = body.layers[0](body.patch_embed(x))  # NHWC
        taps = []
        for stage in body.layers[1:]:
            x = stage.downsample(x)
            taps.append(x.flatten(1, 2))
            x = stage.blocks(x)
        taps.append(x.flatten(1, 2))
        return taps


def swin_backbone(model_name: str, pretrained: bool | str | Path | None = False, *, name: str | None = None,
                  **kwargs: Any) -> SwinBackbone:
    """A timm Swin as a :class:`SwinBackbone`; ``kwargs`` go to timm (``img_size``, ``embed_dim``, ...)."""
    try:
        import timm
    except ImportError:
        raise ConfigError(f"model.backbone: {name or model_name!r} needs timm: pip install 'fgvc[timm]'") from None
    options: dict[str, Any] = dict(kwargs)
    if isinstance(pretrained, str | Path) and str(pretrained) not in ("true", "imagenet"):
        options["pretrained_cfg_overlay"] = {"file": str(pretrained)}
    body = timm.create_model(model_name, pretrained=bool(pretrained), num_classes=0, **options)
    size = int(body.patch_embed.img_size[0])
    return SwinBackbone(body, name or model_name, size)


# timm's Swin configs normalise with ImageNet's statistics (the registry's default), as the authors' dataset does
for _name, (_timm_name, _size) in SWIN_VARIANTS.items():
    register_backbone(BackboneSpec(
        _name, lambda pretrained, _n=_name, _t=_timm_name: swin_backbone(_t, pretrained, name=_n)))
