"""``fgvc predict FILE``: predictions with an exported file instead of a run — the same
``predictions.csv`` and ``submission.json``, from the file alone (no checkpoint, no model code).

The file is a model source (:class:`ExportSource`) run by the same function as a run or an ensemble
(:func:`fgvc.engine.ensemble.infer_source`): images are read and preprocessed exactly as for the run
(the same dataset readers and loader, the stored preprocessing), so the top-1 equals the run's on the
same images; probabilities are divided by the run's temperature stored in the file, as ``fgvc predict
RUN`` divides them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Sampler

from ..data.classes import ClassTable
from ..data.dataset import FGVCDataset
from ..data.index import DatasetIndex
from ..engine.distributed import DistInfo
from ..engine.ensemble import infer_source
from ..engine.predict import PredictionRow, collect_test_images, prediction_rows
from ..engine.run import FGVCLoader, data_loader
from ..models.output import ModelOutput
from .metadata import Preprocessing
from .runtime import ExportedModel

__all__ = ["ExportSource", "images_to_predict", "predict_exported"]


class _Runtime(nn.Module):
    """The exported file behind the module interface the inference loop calls (no parameters)."""

    def __init__(self, model: ExportedModel) -> None:
        super().__init__()
        self.exported = model

    def forward(self, images: Tensor) -> ModelOutput:
        out = self.exported(images)
        return ModelOutput(logits=out.logits, object_boxes=out.object_boxes)


@dataclass
class ExportSource:
    """An exported file as a model source (:class:`fgvc.engine.inference.ModelSource`): its class table,
    preprocessing and temperature come from its metadata. Its batches stay on the CPU: the runtime
    places them on its own device. ``calibrate``: the file's temperature (else 1)."""

    exported: ExportedModel
    calibrate: bool = True

    @property
    def path(self) -> Path:
        return self.exported.path

    @property
    def classes(self) -> ClassTable:
        return self.exported.classes

    @property
    def preprocessing(self) -> Preprocessing:
        return self.exported.preprocessing

    @property
    def temperature(self) -> float:
        return self.exported.temperature if self.calibrate else 1.0

    @property
    def localises(self) -> bool:
        return self.exported.metadata.localises and self.preprocessing.whole_image

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return None

    @property
    def dist(self) -> DistInfo:
        return DistInfo()

    def loader(self, index: DatasetIndex, batch_size: int | None, sampler: Sampler | None) -> FGVCLoader:
        dataset = FGVCDataset(index, self.preprocessing.image_transform(), num_classes=len(self.classes))
        return data_loader(dataset, self.preprocessing.batch_transform(), batch_size=batch_size or 32, sampler=sampler)

    def model(self) -> nn.Module:
        return _Runtime(self.exported)


def images_to_predict(root: str | Path, model: ExportedModel) -> DatasetIndex:
    """The test split of a dataset folder (its classes must be the file's), or a flat folder of images."""
    return collect_test_images(root, ExportSource(model))


def predict_exported(model: ExportedModel, index: DatasetIndex, batch_size: int = 32,
                     progress: bool = True, calibrate: bool = True) -> list[PredictionRow]:
    """Top-5 per image, in the index's order; ``calibrate``: at the file's temperature (else 1)."""
    source = ExportSource(model, calibrate)
    result = infer_source(source, index, batch_size=batch_size, progress=progress, desc="predict", amp=False)
    return prediction_rows(index, source.classes, result)
