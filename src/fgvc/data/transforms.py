"""Per-recipe image transforms (torchvision.transforms.v2), scaled to any input size.

* ``fbsd`` (REFERENCE §1.1): resize to (550/448)·size square, ``RandomCrop(size, padding=8)`` and a
  horizontal flip for training, ``CenterCrop(size)`` for evaluation; mean = std = 0.5 (F8: the
  authors' choice although the backbone was trained with ImageNet statistics).
* ``mmal`` (REFERENCE §2.8): resize straight to size x size (aspect ratio not kept, no crop), a
  flip and ``ColorJitter(brightness=0.2, contrast=0.2)`` for training; ImageNet statistics.
* ``plain``: resize to size x size, flip for training, the statistics of the backbone's weights
  (passed by the run from the backbone registry; ImageNet's when none are given).

Each recipe is a :class:`Recipe`: whether its input is the whole image resized (boxes then map to
the original by plain scaling — what localisation metrics and ``fgvc explain`` rely on) and its
statistics (None: the backbone's).

Input is a PIL image (what :mod:`fgvc.data.decode` returns); output a float tensor (3, size, size).

Split pipeline (what the loaders use): ``build_transform(..., output="uint8")`` keeps the per-image work
in the DataLoader workers to decoding and geometry on 8-bit data, and :class:`BatchTransform` does the
rest on the whole batch on the training device — float conversion, the MMAL colour jitter (per-sample
factors and order, as ``ColorJitter``) and normalisation. On a 500x375 JPEG the float conversion and
normalisation cost more than decoding (1.7 ms vs 1.3 ms per image on one core), and 8-bit batches are a
quarter of the bytes to move to the GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode, v2

from ..errors import ConfigError

__all__ = ["RECIPES", "Recipe", "recipe", "BatchTransform", "build_batch_transform", "build_transform",
           "jitter_brightness_contrast"]

FBSD_RESIZE_RATIO = 550 / 448
HALF = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MMAL_JITTER = 0.2  # ColorJitter(brightness=0.2, contrast=0.2), REFERENCE §2.8
Stats = tuple[float, float, float]


@dataclass(frozen=True)
class Recipe:
    """``whole_image``: the eval input is the whole image resized (no crop). ``mean``/``std``: the
    recipe's own statistics, None to use the backbone's."""

    name: str
    whole_image: bool
    mean: Stats | None = None
    std: Stats | None = None


RECIPES: dict[str, Recipe] = {
    "fbsd": Recipe("fbsd", whole_image=False, mean=HALF, std=HALF),
    "mmal": Recipe("mmal", whole_image=True, mean=IMAGENET_MEAN, std=IMAGENET_STD),
    "plain": Recipe("plain", whole_image=True),
}


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"model.transform: unknown transform recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]


def build_transform(
    recipe: str,
    size: int,
    train: bool,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    output: str = "float",
) -> Callable[[object], torch.Tensor]:
    """The recipe's train or eval pipeline at ``size`` px; ``mean``/``std`` override its statistics.
    ``output="uint8"`` stops after the geometric steps (the rest is :class:`BatchTransform`)."""
    default_mean, default_std = _stats(recipe)
    bilinear = InterpolationMode.BILINEAR
    steps: list = [v2.ToImage()]  # uint8 tensor: geometric ops run on 8-bit data, once
    if recipe == "fbsd":
        resize = round(size * FBSD_RESIZE_RATIO)
        steps.append(v2.Resize((resize, resize), interpolation=bilinear, antialias=True))
        steps += [v2.RandomCrop(size, padding=8), v2.RandomHorizontalFlip()] if train else [v2.CenterCrop(size)]
    else:
        steps.append(v2.Resize((size, size), interpolation=bilinear, antialias=True))
        if train:
            steps.append(v2.RandomHorizontalFlip())
            if recipe == "mmal" and output == "float":
                steps.append(v2.ColorJitter(brightness=MMAL_JITTER, contrast=MMAL_JITTER))
    if output == "uint8":
        return v2.Compose(steps)
    if output != "float":
        raise ValueError(f"output must be 'float' or 'uint8', got {output!r}")
    steps += [v2.ToDtype(torch.float32, scale=True),
              v2.Normalize(list(mean or default_mean), list(std or default_std))]
    return v2.Compose(steps)


def _stats(name: str) -> tuple[Stats, Stats]:
    r = recipe(name)
    return r.mean or IMAGENET_MEAN, r.std or IMAGENET_STD


def jitter_brightness_contrast(x: Tensor, brightness: Tensor, contrast: Tensor, brightness_first: Tensor) -> Tensor:
    """``ColorJitter`` restricted to brightness and contrast, batched: per-sample factors (B,) and order
    (B,) bool, on float images in [0, 1]. Same arithmetic as torchvision's ``adjust_brightness`` (scale,
    clamp) and ``adjust_contrast`` (blend with the image's grayscale mean, clamp)."""
    b = brightness.view(-1, 1, 1, 1).to(x.dtype)
    c = contrast.view(-1, 1, 1, 1).to(x.dtype)
    weights = torch.tensor([0.2989, 0.587, 0.114], device=x.device, dtype=x.dtype).view(1, 3, 1, 1)

    def bright(t: Tensor) -> Tensor:
        return (t * b).clamp_(0, 1)

    def contr(t: Tensor) -> Tensor:
        mean = (t * weights).sum(dim=1, keepdim=True).mean(dim=(2, 3), keepdim=True)
        return (c * t + (1 - c) * mean).clamp_(0, 1)

    return torch.where(brightness_first.view(-1, 1, 1, 1), contr(bright(x)), bright(contr(x)))


class BatchTransform(nn.Module):
    """The device-side half of a recipe: uint8 batch -> float, (train) jitter, normalise."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], jitter: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.jitter = jitter

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype != torch.uint8:  # already float and normalised (e.g. the full CPU pipeline)
            return x
        x = x.float().div_(255)
        if self.training and self.jitter:
            n = x.shape[0]
            low, high = 1 - self.jitter, 1 + self.jitter
            draw = torch.rand(3, n, device=x.device)
            x = jitter_brightness_contrast(x, low + (high - low) * draw[0], low + (high - low) * draw[1], draw[2] < 0.5)
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return (x - mean) / std


def build_batch_transform(recipe: str, train: bool, mean: Sequence[float] | None = None,
                          std: Sequence[float] | None = None) -> BatchTransform:
    default_mean, default_std = _stats(recipe)
    jitter = MMAL_JITTER if recipe == "mmal" else 0.0
    return BatchTransform(mean or default_mean, std or default_std, jitter).train(train)
