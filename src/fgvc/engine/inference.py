"""The one inference path: a model *source* over images, and the loop every command runs it with.

A source is a trained run (:class:`RunSource`), an exported file (``fgvc.export.predict.ExportSource``)
or, one level up, an ensemble of runs with weights and test-time views (:class:`fgvc.engine.ensemble.Ensemble`,
run by :func:`fgvc.engine.ensemble.infer_source`). Each source says what its outputs mean — its class
table, its preprocessing, its temperature, whether its boxes are object boxes on the whole image — and
reads images through a loader built by :func:`fgvc.engine.run.data_loader` (the one place a loader is
built). :func:`source_pass` runs one source (sharded under torchrun as ``evaluate`` is); :func:`infer`
is its model-level loop, which training's validation also uses.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Sampler
from tqdm import tqdm

from ..data.classes import ClassTable
from ..data.index import DatasetIndex
from .calibration import scaled_probabilities
from .distributed import DistInfo, ShardSampler, all_gather_objects
from .run import FGVCLoader, Run
from .views import UNCALIBRATED, WITHOUT_TTA, with_views

__all__ = ["Inference", "infer", "autocast_context", "ModelSource", "RunSource", "SourceOutput", "source_pass"]


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class Inference:
    """Everything ``infer`` saw, in dataset order (``indices`` sorted)."""

    indices: Tensor  # (N,) positions in the dataset
    labels: Tensor  # (N,) -1 where unlabelled
    logits: Tensor  # (N, C) what prediction uses
    branch_logits: dict[str, Tensor] = field(default_factory=dict)
    object_boxes: Tensor | None = None  # (N, 4) input pixels, inclusive
    orig_sizes: Tensor | None = None  # (N, 2) (height, width) of the decoded image
    input_size: tuple[int, int] = (0, 0)
    loss_sum: float = 0.0

    @property
    def predictions(self) -> Tensor:
        return self.logits.argmax(dim=1)


def _concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in parts[0]:
        if isinstance(parts[0][key], dict):
            out[key] = {k: torch.cat([p[key][k] for p in parts]) for k in parts[0][key]}
        elif isinstance(parts[0][key], Tensor):
            out[key] = torch.cat([p[key] for p in parts])
        else:
            out[key] = parts[0][key]
    return out


@torch.no_grad()
def infer(model: nn.Module, loader: DataLoader, device: torch.device, amp_dtype: torch.dtype | None = None,
          progress: bool = False, desc: str = "eval", with_loss: bool = True) -> Inference:
    was_training = model.training
    model.eval()
    chunks: list[dict[str, Any]] = []
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # summed on the device: no sync per batch
    index = getattr(getattr(loader, "dataset", None), "index", None)
    with_loss = with_loss and index is not None and index.has_labels  # decided once, from the data
    input_size = (0, 0)
    base = getattr(model, "module", model)  # DDP wrapper -> the model with .loss
    try:
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            if batch is None:
                continue
            x = batch["image"].to(device, non_blocking=True)
            prepare = getattr(loader, "prepare", None)
            x = prepare(x) if prepare is not None else x
            y = batch["label"].to(device, non_blocking=True)
            input_size = tuple(x.shape[-2:])
            with autocast_context(device, amp_dtype):
                out = model(x)
            if with_loss:
                loss_sum += base.loss(out, y, epoch=None)[0].double() * len(y)
            chunk = {"indices": batch["index"].cpu(), "labels": y.cpu(), "logits": out.logits.float().cpu(),
                     "orig_sizes": batch["orig_size"].cpu(),
                     "branch_logits": {k: v.float().cpu() for k, v in out.branch_logits.items() if v.dim() == 2}}
            if out.object_boxes is not None:
                chunk["object_boxes"] = out.object_boxes.float().cpu()
            chunks.append(chunk)
    finally:
        model.train(was_training)
    gathered = [c for rank_chunks in all_gather_objects(chunks) for c in rank_chunks]
    total_loss = sum(all_gather_objects(float(loss_sum)))
    if not gathered:
        return Inference(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), torch.empty(0, 0))
    merged = _concat(gathered)
    order = merged["indices"].argsort()
    return Inference(
        indices=merged["indices"][order],
        labels=merged["labels"][order],
        logits=merged["logits"][order],
        branch_logits={k: v[order] for k, v in merged["branch_logits"].items()},
        object_boxes=merged["object_boxes"][order] if "object_boxes" in merged else None,
        orig_sizes=merged["orig_sizes"][order],
        input_size=input_size,
        loss_sum=total_loss,
    )


# -- sources --------------------------------------------------------------------------------------

class ModelSource(Protocol):
    """One model that turns images into ``ModelOutput``s (the structural type every source meets)."""

    @property
    def path(self) -> Path: ...  # what the user gave: named in errors

    @property
    def classes(self) -> ClassTable: ...

    @property
    def preprocessing(self) -> Any: ...  # how an image becomes the model's input (opaque here)

    @property
    def temperature(self) -> float: ...  # logits / T before the softmax (1 without calibration)

    @property
    def localises(self) -> bool: ...  # object boxes on the whole image: they map back by plain scaling

    @property
    def device(self) -> torch.device: ...

    @property
    def amp_dtype(self) -> torch.dtype | None: ...

    @property
    def dist(self) -> DistInfo: ...

    def loader(self, index: DatasetIndex, batch_size: int | None, sampler: Sampler | None) -> FGVCLoader: ...

    def model(self) -> nn.Module: ...  # images in, ModelOutput out


@dataclass
class RunSource:
    """A trained run (:meth:`Run.open`) as a source: its checkpoint's model, loader and temperature."""

    run: Run

    @property
    def path(self) -> Path:
        assert self.run.checkpoint_path is not None
        return self.run.checkpoint_path

    @property
    def classes(self) -> ClassTable:
        assert self.run.classes is not None
        return self.run.classes

    @property
    def preprocessing(self) -> Any:
        return self.run.preprocessing

    @property
    def temperature(self) -> float:
        return self.run.temperature

    @property
    def localises(self) -> bool:
        return self.run.localises

    @property
    def device(self) -> torch.device:
        return self.run.device

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return self.run.amp_dtype

    @property
    def dist(self) -> DistInfo:
        return self.run.dist

    def loader(self, index: DatasetIndex, batch_size: int | None, sampler: Sampler | None) -> FGVCLoader:
        return self.run.loader(index, False, batch_size=batch_size, sampler=sampler)

    def model(self) -> nn.Module:
        return self.run.trained_model()


@dataclass
class SourceOutput:
    """One source's pass over the images: probabilities in the caller's class order."""

    result: Inference
    probabilities: Tensor  # at the member's temperature, averaged over its views
    uncalibrated: Tensor  # at temperature 1, averaged over its views
    without_tta: Tensor | None  # logits of the unchanged view, when there are views


def source_pass(source: ModelSource, index: DatasetIndex, tta: str, columns: Tensor | None, *,
                 batch_size: int | None, progress: bool, desc: str, amp: bool, shard: bool,
                 with_loss: bool = False) -> SourceOutput:
    """The one inference loop: ``source`` over ``index`` (``shard``: this process's share under torchrun,
    all gathered), with ``tta`` views, probabilities at its temperature in the column order ``columns``."""
    temperature = source.temperature
    sampler = ShardSampler(len(index), source.dist.rank, source.dist.world_size) if shard else None
    loader = source.loader(index, batch_size, sampler)
    model = with_views(source.model(), tta, temperature)
    result = infer(model, loader, source.device, source.amp_dtype if amp else None,
                   progress=progress and source.dist.is_main, desc=desc, with_loss=with_loss)
    if tta == "none":
        probabilities = scaled_probabilities(result.logits, temperature)
        uncalibrated = scaled_probabilities(result.logits)
    else:  # the view-averaged model's logits are the log of its calibrated mean already
        probabilities = result.logits.softmax(dim=1)
        uncalibrated = result.branch_logits[UNCALIBRATED].softmax(dim=1)
    without = result.branch_logits.get(WITHOUT_TTA) if tta != "none" else None

    def ordered(scores: Tensor) -> Tensor:
        return scores if columns is None else scores[:, columns]

    return SourceOutput(result, ordered(probabilities), ordered(uncalibrated),
                         None if without is None else ordered(without))
