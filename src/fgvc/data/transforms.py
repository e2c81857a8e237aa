"""Preprocessing as data: :class:`Preprocessing` states the geometry and the statistics explicitly, the
way timm's ``pretrained_cfg`` does — resize target (H, W), centre crop (H, W) or none, interpolation,
antialias, mean and std (on values scaled to 0–1, channels RGB) — and the training augmentations as
parameters. ``Run`` holds one, checkpoints store it, an exported file carries it, so a program without
fgvc can rebuild the input (README, "Export").

The papers' recipes are values of it, at any input size ``S``:

* ``fbsd`` (REFERENCE §1.1): resize to round(S·550/448) square, centre crop S (training:
  ``RandomCrop(S, padding=8)`` and a flip); mean = std = 0.5 (F8: the authors' choice although the
  backbone was trained with ImageNet statistics).
* ``mmal`` (REFERENCE §2.8): resize straight to S x S (aspect ratio not kept, no crop); training adds a
  flip and ``ColorJitter(brightness=0.2, contrast=0.2)``; ImageNet statistics.
* ``cal`` (CAL, ``raoyongming/CAL``): resize to round(S/0.875) square, centre crop S (training: ``RandomCrop(S)``
  and a flip, then ``ColorJitter(brightness=0.126, saturation=0.5)``, batched); ImageNet statistics.
* ``transfg`` / ``transfg_cars`` (TACJu/TransFG): resize to round(S·600/448) square, centre crop S (training:
  ``RandomCrop(S)``, a flip; Cars adds AutoAugment's ImageNet policy); ImageNet statistics.
* ``pim`` (chou141253/FGVC-PIM): resize to round(S·510/384) square, centre crop S (training: ``RandomCrop(S)``, a
  flip, a Gaussian blur and a sharpening with probability 0.1 each); ImageNet statistics.
* ``plain``: resize to S x S, a flip for training, the statistics of the backbone's weights (which the
  caller must give: there is no fallback).

A recipe without a crop feeds the whole image resized: boxes then map to the original by plain scaling
(what localisation metrics and ``fgvc explain`` rely on).

Input is a PIL image (what :mod:`fgvc.data.decode` returns); output a float tensor (3, H, W).
The resize runs on the 8-bit tensor (torch's antialiased bilinear kernel for uint8, written to match
Pillow's): PIL's ``image.resize((W, H), Image.Resampling.BILINEAR)`` (always antialiased) gives the same
pixels within 2 of 255 (most equal), so a consumer with only PIL gets the same top-1.

Split pipeline (what the loaders use): ``transform(train, output="uint8")`` keeps the per-image work in
the DataLoader workers to decoding and geometry on 8-bit data, and :class:`BatchTransform` does the rest
on the whole batch on the training device — float conversion, the MMAL colour jitter (per-sample factors
and order, as ``ColorJitter``) and normalisation. On a 500x375 JPEG the float conversion and
normalisation cost more than decoding (1.7 ms vs 1.3 ms per image on one core), and 8-bit batches are a
quarter of the bytes to move to the GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode, v2

from ..errors import ConfigError

__all__ = ["RECIPES", "Recipe", "recipe", "Preprocessing", "BatchTransform", "build_batch_transform",
           "build_transform", "color_jitter", "ColorJitterSpec", "IMAGENET_MEAN", "IMAGENET_STD"]

FBSD_RESIZE_RATIO = 550 / 448
HALF = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # the one definition of ImageNet's statistics in fgvc
IMAGENET_STD = (0.229, 0.224, 0.225)
MMAL_JITTER = 0.2  # ColorJitter(brightness=0.2, contrast=0.2), REFERENCE §2.8
ColorJitterSpec = tuple[float, float, float]  # ColorJitter's (brightness, contrast, saturation); 0: not jittered
NO_JITTER: ColorJitterSpec = (0.0, 0.0, 0.0)
VALUE_SCALE = 255.0  # 8-bit values are divided by this (to 0–1) before (x - mean) / std
CHANNEL_ORDER = "RGB"
Stats = tuple[float, ...]
Size = tuple[int, int]

# Named training augmentations a recipe may add after the flip, on the 8-bit image (torchvision's implementations
# with the authors' parameters; AutoAugment is torchvision's ImageNet policy, not their copy of it: V9). A name, not
# an object, so that a checkpoint stores them as data.
TRAIN_AUGMENTS: dict[str, Callable[[], nn.Module]] = {
    # TransFG's Cars pipeline: AutoAugment's ImageNet policy, grey (128) fill (V9)
    "autoaugment_imagenet": lambda: v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET, fill=128),
    # PIM: RandomApply([GaussianBlur(kernel_size=5, sigma=(0.1, 5))], p=0.1), then
    # RandomAdjustSharpness(sharpness_factor=1.5, p=0.1) (I6)
    "gaussian_blur_p0.1": lambda: v2.RandomApply([v2.GaussianBlur(kernel_size=(5, 5), sigma=(0.1, 5.0))], p=0.1),
    "sharpness1.5_p0.1": lambda: v2.RandomAdjustSharpness(sharpness_factor=1.5, p=0.1),
}


@dataclass(frozen=True)
class Preprocessing:
    """One model input's preprocessing, explicit: PIL image -> resize to ``resize`` (H, W) with
    ``interpolation``/``antialias`` -> centre crop ``crop`` (H, W) unless None -> values / 255 ->
    (x - mean) / std, channels RGB, layout (3, H, W). Training replaces the centre crop with
    ``RandomCrop(crop, padding=train_crop_padding)`` where that is set, flips when ``train_flip``, and
    jitters colour as ``ColorJitter(*train_jitter)`` — (brightness, contrast, saturation) — and applies the named
    ``train_augment`` steps (:data:`TRAIN_AUGMENTS`) after the flip, in order. ``recipe`` names where it came from."""

    recipe: str
    resize: Size
    crop: Size | None
    mean: Stats
    std: Stats
    interpolation: str = "bilinear"
    antialias: bool = True
    train_crop_padding: int | None = None
    train_flip: bool = True
    train_jitter: ColorJitterSpec = NO_JITTER
    train_augment: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        unknown = [name for name in self.train_augment if name not in TRAIN_AUGMENTS]
        if unknown:
            raise ConfigError(f"preprocessing: unknown training augmentation {unknown[0]!r}; known: "
                              f"{', '.join(TRAIN_AUGMENTS)}")

    @property
    def input_hw(self) -> Size:
        """(H, W) of the model input."""
        return self.crop or self.resize

    @property
    def input_size(self) -> int:
        """The side of the (square) model input."""
        return self.input_hw[0]

    @property
    def whole_image(self) -> bool:
        """The input is the whole image resized: boxes map to the original by plain scaling."""
        return self.crop is None

    def transform(self, train: bool, output: str = "float") -> Callable[[object], Tensor]:
        """The train or eval pipeline; ``output="uint8"`` stops after the geometric steps (the rest is
        :meth:`batch_transform`)."""
        if output not in ("float", "uint8"):
            raise ValueError(f"output must be 'float' or 'uint8', got {output!r}")
        steps: list = [v2.ToImage(),  # uint8 tensor: geometric ops run on 8-bit data, once
                       v2.Resize(self.resize, interpolation=InterpolationMode(self.interpolation),
                                 antialias=self.antialias)]
        if self.crop is not None:
            random_crop = train and self.train_crop_padding is not None
            steps.append(v2.RandomCrop(self.crop, padding=self.train_crop_padding) if random_crop
                         else v2.CenterCrop(self.crop))
        if train and self.train_flip:
            steps.append(v2.RandomHorizontalFlip())
        if train:
            steps += [TRAIN_AUGMENTS[name]() for name in self.train_augment]
        if output == "uint8":
            return v2.Compose(steps)
        if train and any(self.train_jitter):
            brightness, contrast, saturation = self.train_jitter
            steps.append(v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation))
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(self.mean), list(self.std))]
        return v2.Compose(steps)

    def image_transform(self) -> Callable[[Any], Tensor]:
        """PIL image -> uint8 (3, H, W): the evaluation geometry, as the loader workers do it."""
        return self.transform(False, output="uint8")

    def batch_transform(self, train: bool = False) -> BatchTransform:
        """uint8 batch -> normalised float batch (training: with the jitter), as the loader finishes it."""
        return BatchTransform(self.mean, self.std, self.train_jitter).train(train)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the value scale and channel order stated for a reader without fgvc."""
        return {"recipe": self.recipe, "resize": list(self.resize),
                "crop": None if self.crop is None else list(self.crop),
                "interpolation": self.interpolation, "antialias": self.antialias,
                "mean": list(self.mean), "std": list(self.std),
                "value_scale": VALUE_SCALE, "channel_order": CHANNEL_ORDER,
                "train_crop_padding": self.train_crop_padding, "train_flip": self.train_flip,
                "train_jitter": dict(zip(JITTER_NAMES, self.train_jitter, strict=True)),
                "train_augment": list(self.train_augment)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """The inverse of :meth:`to_dict`; a mapping that only names a recipe (older checkpoints and
        exports: ``recipe``, ``input_size``, ``mean``, ``std``) is resolved by that name."""
        if "resize" not in data:
            return recipe(data["recipe"]).at(int(data["input_size"]), data.get("mean"), data.get("std"))
        if float(data.get("value_scale", VALUE_SCALE)) != VALUE_SCALE or \
                data.get("channel_order", CHANNEL_ORDER) != CHANNEL_ORDER:
            raise ConfigError(f"preprocessing: value_scale {data.get('value_scale')} / channel_order "
                              f"{data.get('channel_order')!r} unsupported (fgvc writes {VALUE_SCALE:g} and "
                              f"{CHANNEL_ORDER})")
        crop = data["crop"]
        padding = data.get("train_crop_padding")
        return cls(str(data["recipe"]), _size(data["resize"]), None if crop is None else _size(crop),
                   tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]),
                   str(data.get("interpolation", "bilinear")), bool(data.get("antialias", True)),
                   None if padding is None else int(padding), bool(data.get("train_flip", True)),
                   _jitter(data.get("train_jitter", 0.0)), _augment(data.get("train_augment", ())))


JITTER_NAMES = ("brightness", "contrast", "saturation")


def _jitter(value: Any) -> ColorJitterSpec:
    """A stored jitter: ``{"brightness": ..., "contrast": ..., "saturation": ...}``, or one number (checkpoints
    and exports before saturation existed: brightness and contrast by that factor)."""
    if isinstance(value, Mapping):
        b, c, s = (float(value.get(name, 0.0)) for name in JITTER_NAMES)
        return b, c, s
    return float(value), float(value), 0.0


def _augment(value: Any) -> tuple[str, ...]:
    """A stored list of augmentation names (absent in checkpoints and exports before they existed: none)."""
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(f"preprocessing: train_augment must be a list of names, got {value!r}")
    return tuple(str(v) for v in value)


def _size(value: Sequence[int]) -> Size:
    h, w = (int(v) for v in value)
    return h, w


@dataclass(frozen=True)
class Recipe:
    """A paper's preprocessing at any input size S: resize to round(S·``resize_ratio``) square and
    centre crop S (ratio 1: resize to S, no crop); ``mean``/``std`` the recipe's own statistics
    (None: the backbone's, which :meth:`at` then requires)."""

    name: str
    resize_ratio: float = 1.0
    mean: Stats | None = None
    std: Stats | None = None
    train_crop_padding: int | None = None
    train_jitter: ColorJitterSpec = NO_JITTER
    train_augment: tuple[str, ...] = ()

    @property
    def whole_image(self) -> bool:
        return self.resize_ratio == 1.0

    def at(self, size: int, mean: Sequence[float] | None = None,
           std: Sequence[float] | None = None) -> Preprocessing:
        """This recipe at ``size`` px; ``mean``/``std`` (the backbone's) override the recipe's own."""
        mean, std = mean or self.mean, std or self.std
        if mean is None or std is None:
            raise ConfigError(f"model.transform: the {self.name!r} recipe normalises with the backbone's "
                              "statistics, and none were given")
        side = round(size * self.resize_ratio)
        return Preprocessing(self.name, (side, side), None if self.whole_image else (size, size),
                             tuple(float(v) for v in mean), tuple(float(v) for v in std),
                             train_crop_padding=self.train_crop_padding, train_jitter=self.train_jitter,
                             train_augment=self.train_augment)


RECIPES: dict[str, Recipe] = {
    "fbsd": Recipe("fbsd", resize_ratio=FBSD_RESIZE_RATIO, mean=HALF, std=HALF, train_crop_padding=8),
    "mmal": Recipe("mmal", mean=IMAGENET_MEAN, std=IMAGENET_STD, train_jitter=(MMAL_JITTER, MMAL_JITTER, 0.0)),
    "plain": Recipe("plain"),
    # CAL (raoyongming/CAL utils.get_transform): resize to S / 0.875 square, RandomCrop(S) / CenterCrop(S), a flip,
    # ColorJitter(brightness=0.126, saturation=0.5), ImageNet statistics
    "cal": Recipe("cal", resize_ratio=1 / 0.875, mean=IMAGENET_MEAN, std=IMAGENET_STD, train_crop_padding=0,
                  train_jitter=(0.126, 0.0, 0.5)),
    # TransFG (TACJu/TransFG utils/data_utils.py): resize to 600 x 600 at 448 (S·600/448), RandomCrop(S) /
    # CenterCrop(S), a flip, ImageNet statistics
    "transfg": Recipe("transfg", resize_ratio=600 / 448, mean=IMAGENET_MEAN, std=IMAGENET_STD, train_crop_padding=0),
    # TransFG's Stanford Cars pipeline: the same, plus AutoAugment's ImageNet policy after the flip (V9)
    "transfg_cars": Recipe("transfg_cars", resize_ratio=600 / 448, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                           train_crop_padding=0, train_augment=("autoaugment_imagenet",)),
    # PIM (chou141253/FGVC-PIM data/dataset.py): resize to 510 x 510 at 384 (S·510/384), RandomCrop(S) /
    # CenterCrop(S), a flip, then GaussianBlur and sharpening with p 0.1 each (I6); ImageNet statistics
    "pim": Recipe("pim", resize_ratio=510 / 384, mean=IMAGENET_MEAN, std=IMAGENET_STD, train_crop_padding=0,
                  train_augment=("gaussian_blur_p0.1", "sharpness1.5_p0.1")),
}


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"model.transform: unknown transform recipe {name!r}; known: {', '.join(RECIPES)}")
    return RECIPES[name]


def build_transform(
    recipe_name: str,
    size: int,
    train: bool,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    output: str = "float",
) -> Callable[[object], torch.Tensor]:
    """Shorthand: ``recipe(recipe_name).at(size, mean, std).transform(train, output)``."""
    return recipe(recipe_name).at(size, mean, std).transform(train, output)


_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def color_jitter(x: Tensor, factors: Tensor, order: Tensor, active: Sequence[int] = (0, 1, 2)) -> Tensor:
    """``ColorJitter`` (brightness, contrast, saturation), batched, on float images in [0, 1]: ``factors`` (3, B)
    per sample, ``order`` (B, 3) each sample's order of the three (a permutation of 0, 1, 2, as ColorJitter draws
    one per image), ``active`` the adjustments the jitter has (the others are left out, as ColorJitter leaves out
    a factor of 0). The arithmetic of torchvision's ``adjust_brightness`` (scale,
    clamp), ``adjust_contrast`` (blend with the grayscale mean, clamp) and ``adjust_saturation`` (blend with the
    grayscale image, clamp)."""
    weights = torch.tensor(_GRAY, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    f = factors.to(x.dtype).view(3, -1, 1, 1, 1)

    def gray(t: Tensor) -> Tensor:
        return (t * weights).sum(dim=1, keepdim=True)

    adjust = (
        lambda t: (t * f[0]).clamp_(0, 1),
        lambda t: (f[1] * t + (1 - f[1]) * gray(t).mean(dim=(2, 3), keepdim=True)).clamp_(0, 1),
        lambda t: (f[2] * t + (1 - f[2]) * gray(t)).clamp_(0, 1),
    )
    for step in range(3):
        op = order[:, step].view(-1, 1, 1, 1)
        for i in active:
            x = torch.where(op == i, adjust[i](x), x)
    return x


class BatchTransform(nn.Module):
    """The device-side half of a recipe: uint8 batch -> float, (train) jitter, normalise."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], jitter: ColorJitterSpec = NO_JITTER) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.jitter = tuple(float(v) for v in jitter)

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype != torch.uint8:  # already float and normalised (e.g. the full CPU pipeline)
            return x
        x = x.float().div_(255)
        if self.training and any(self.jitter):
            n = x.shape[0]
            spread = torch.tensor(self.jitter, device=x.device).view(3, 1)
            low = (1 - spread).clamp(min=0)  # ColorJitter's range [max(0, 1 - v), 1 + v]
            factors = low + (1 + spread - low) * torch.rand(3, n, device=x.device)
            order = torch.rand(n, 3, device=x.device).argsort(dim=1)
            x = color_jitter(x, factors, order, [i for i, v in enumerate(self.jitter) if v])
        mean, std = self.mean.to(x.device), self.std.to(x.device)
        return (x - mean) / std


def build_batch_transform(recipe_name: str, train: bool, mean: Sequence[float] | None = None,
                          std: Sequence[float] | None = None) -> BatchTransform:
    """Shorthand: the recipe's device-side half (its size does not matter here)."""
    return recipe(recipe_name).at(1, mean, std).batch_transform(train)
