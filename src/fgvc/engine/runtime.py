"""What training, evaluation and prediction share: device and precision, data, loaders, models
built from a config or restored from a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler

from ..config import Config, config_from_dict
from ..data.classes import ClassTable
from ..data.dataset import FGVCDataset, collate_skipping
from ..data.formats import read_dataset
from ..data.index import DatasetIndex
from ..data.transforms import BatchTransform, build_batch_transform, build_transform
from ..errors import UserError
from ..models import create_model
from ..models.inference import prepare_for_inference
from .checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint

__all__ = [
    "UserError",
    "resolve_device",
    "resolve_amp",
    "load_data",
    "FGVCLoader",
    "make_loader",
    "build_model",
    "LoadedModel",
    "load_model",
]


def resolve_device(preference: str) -> torch.device:
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(preference)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {preference!r} requested but CUDA is not available here "
                        "(no GPU, or a CPU-only PyTorch build); use --set train.device=cpu or auto")
    return device


def resolve_amp(setting: str, device: torch.device) -> torch.dtype | None:
    """auto: bf16 where the GPU supports it, else fp16 on CUDA; off on CPU (fp32 is the reference)."""
    if setting == "off":
        return None
    if setting == "bf16":
        return torch.bfloat16
    if setting == "fp16":
        return torch.float16
    if setting == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    raise UserError(f"train.amp must be auto, off, bf16 or fp16, got {setting!r}")


def load_data(config: Config, root: str | Path | None = None) -> DatasetIndex:
    """Read the dataset and refuse data with layout errors (``fgvc data check`` lists them)."""
    root = root or config.data.root
    if root is None:
        raise UserError("no dataset given: pass --data ROOT (or set data.root in the config)")
    options: dict[str, Any] = {}
    fmt = None if config.data.format == "auto" else config.data.format
    if (fmt or "") == "aircraft":
        options["level"] = config.data.aircraft_level
    index = read_dataset(root, fmt, **options)
    errors = [p for p in index.problems if p.severity == "error"]
    if errors:
        listed = "\n  ".join(str(p) for p in errors[:10])
        raise UserError(f"{len(errors)} problem(s) in {root}:\n  {listed}\n"
                        f"Fix them first; `fgvc data check {root}` shows the full report.")
    return index


class FGVCLoader(DataLoader):
    """A DataLoader of 8-bit images plus the batch transform that finishes them on the device."""

    batch_transform: BatchTransform

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return self.batch_transform(images)


def make_loader(index: DatasetIndex, config: Config, train: bool, num_classes: int,
                sampler: Sampler | None = None, batch_size: int | None = None) -> FGVCLoader:
    recipe, size = config.model.transform, config.model.input_size
    transform = build_transform(recipe, size, train, output="uint8")
    dataset = FGVCDataset(index, transform, num_classes=num_classes, skip_unreadable=config.data.skip_unreadable)
    batch_size = batch_size or (config.train.batch_size if train else config.train.eval_batch_size)
    loader = FGVCLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=config.data.num_workers,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
        drop_last=train and config.train.drop_last and len(dataset) > batch_size,
        collate_fn=collate_skipping,
    )
    loader.batch_transform = build_batch_transform(recipe, train)
    return loader


def build_model(config: Config, num_classes: int, pretrained: bool | str | None = None) -> nn.Module:
    m = config.model
    return create_model(m.name, num_classes, backbone=m.backbone,
                        pretrained=m.pretrained if pretrained is None else pretrained, **m.options)


@dataclass
class LoadedModel:
    model: nn.Module
    config: Config
    classes: ClassTable
    checkpoint: dict[str, Any]
    path: Path


def load_model(path: str | Path, device: torch.device | str = "cpu", for_inference: bool = False) -> LoadedModel:
    """Rebuild a trained model from a checkpoint or run directory (no ImageNet download: REFERENCE M21).

    ``for_inference``: BatchNorm folded and channels_last (:func:`prepare_for_inference`) — faster
    prediction, same outputs within float rounding; such a model cannot be trained further."""
    ckpt_path = resolve_checkpoint(path)
    state = load_checkpoint(ckpt_path)
    config = config_from_dict(state["config"])
    classes = ClassTable.from_dict(state["classes"])
    model = build_model(config, len(classes), pretrained=False)
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt_path} does not match a {config.model.name}/{config.model.backbone} "
                              f"model: {str(e)[:300]}") from None
    model = model.to(device)
    if for_inference:
        model = prepare_for_inference(model)
    return LoadedModel(model, config, classes, state, ckpt_path)
