"""Per-recipe image transforms (torchvision.transforms.v2), scaled to any input size.

* ``fbsd`` (REFERENCE §1.1): resize to (550/448)·size square, ``RandomCrop(size, padding=8)`` and a
  horizontal flip for training, ``CenterCrop(size)`` for evaluation; mean = std = 0.5 (F8: the
  authors' choice although the backbone was trained with ImageNet statistics).
* ``mmal`` (REFERENCE §2.8): resize straight to size x size (aspect ratio not kept, no crop), a
  flip and ``ColorJitter(brightness=0.2, contrast=0.2)`` for training; ImageNet statistics.
* ``plain``: resize to size x size, flip for training, the backbone's statistics.

Input is a PIL image (what :mod:`fgvc.data.decode` returns); output a float tensor (3, size, size).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision.transforms import InterpolationMode, v2

__all__ = ["RECIPES", "build_transform"]

RECIPES = ("fbsd", "mmal", "plain")
FBSD_RESIZE_RATIO = 550 / 448
HALF = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_transform(
    recipe: str,
    size: int,
    train: bool,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Callable[[object], torch.Tensor]:
    """The recipe's train or eval pipeline at ``size`` px; ``mean``/``std`` override its statistics."""
    if recipe not in RECIPES:
        raise ValueError(f"unknown transform recipe {recipe!r}; known: {', '.join(RECIPES)}")
    bilinear = InterpolationMode.BILINEAR
    steps: list = [v2.ToImage()]  # uint8 tensor: geometric ops run on 8-bit data, once
    if recipe == "fbsd":
        resize = round(size * FBSD_RESIZE_RATIO)
        steps.append(v2.Resize((resize, resize), interpolation=bilinear, antialias=True))
        steps += [v2.RandomCrop(size, padding=8), v2.RandomHorizontalFlip()] if train else [v2.CenterCrop(size)]
        default_mean, default_std = HALF, HALF
    else:
        steps.append(v2.Resize((size, size), interpolation=bilinear, antialias=True))
        if train:
            steps.append(v2.RandomHorizontalFlip())
            if recipe == "mmal":
                steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2))
        default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD
    steps += [v2.ToDtype(torch.float32, scale=True),
              v2.Normalize(list(mean or default_mean), list(std or default_std))]
    return v2.Compose(steps)
