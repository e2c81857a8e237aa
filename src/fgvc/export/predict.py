"""``fgvc predict FILE``: predictions with an exported file instead of a run — the same
``predictions.csv`` and ``submission.json``, from the file alone (no checkpoint, no model code).

Images are read and preprocessed exactly as for the run (the same dataset readers, the stored
recipe), so the top-1 equals the run's on the same images; probabilities are divided by the run's
temperature stored in the file, as ``fgvc predict RUN`` divides them.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..data.dataset import FGVCDataset, collate_skipping
from ..data.index import DatasetIndex
from ..engine.calibration import scaled_probabilities
from ..engine.predict import PredictionRow, collect_test_images
from ..errors import UserError
from .runtime import ExportedModel

__all__ = ["images_to_predict", "predict_exported"]


def images_to_predict(root: str | Path, model: ExportedModel) -> DatasetIndex:
    """The test split of a dataset folder (its classes must be the file's), or a flat folder of images."""
    # collect_test_images asks only for the class table and what to name in errors
    return collect_test_images(root, SimpleNamespace(classes=model.classes, checkpoint_path=model.path))


@torch.no_grad()
def predict_exported(model: ExportedModel, index: DatasetIndex, batch_size: int = 32,
                     progress: bool = True, calibrate: bool = True) -> list[PredictionRow]:
    """Top-5 per image, in the index's order; ``calibrate``: at the file's temperature (else 1)."""
    preprocessing = model.preprocessing
    dataset = FGVCDataset(index, preprocessing.image_transform(), num_classes=len(model.classes))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0, collate_fn=collate_skipping)
    normalise = preprocessing.batch_transform()
    classes = model.classes
    temperature = model.temperature if calibrate else 1.0
    rows: list[PredictionRow] = []
    for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
        if batch is None:
            continue
        probs = scaled_probabilities(model(normalise(batch["image"])).logits, temperature)
        top_p, top_i = probs.topk(min(5, probs.shape[1]), dim=1)
        for pos, ps, ids in zip(batch["index"].tolist(), top_p.tolist(), top_i.tolist(), strict=True):
            sample = index.samples[pos]
            rows.append(PredictionRow(sample.image_id, classes.id_of(ids[0]), classes.name_of(ids[0]), ps[0],
                                      tuple((classes.id_of(i), p) for i, p in zip(ids, ps, strict=True))))
    if len(rows) != len(index):
        raise UserError(f"{len(index) - len(rows)} test image(s) could not be decoded; "
                        "run `fgvc data check` on the data")
    return rows
