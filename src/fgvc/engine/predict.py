"""Batched inference over test images -> ``predictions.csv`` and the competition's ``submission.json``.

Both files are written atomically before anything is sent anywhere. Class IDs come from the
checkpoint's ClassTable, spelled exactly as the training folders spell them.

One run without views writes exactly those two files. An ensemble (several runs, or views:
:mod:`fgvc.engine.ensemble`) writes its own top-1 and top-5 in the same columns, each member's top-1
in ``model1_class_id``, ``model2_class_id``, ... and, in ``ensemble.json``, which run is which and
the weights and views used.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..competition.submission import write_submission
from ..data.classes import ClassTable, ClassTableError
from ..data.formats import read_dataset
from ..data.index import DatasetIndex, DatasetLayoutError, Sample, is_hidden, is_image_file, list_dir
from ..errors import UserError
from ..fileio import atomic_write_json, atomic_write_text
from .ensemble import Ensemble, EnsembleInference, infer_source
from .inference import ModelSource
from .run import Run

__all__ = ["PredictionRow", "collect_test_images", "predict_ensemble", "prediction_rows", "write_predictions",
           "ENSEMBLE_FILE"]

ENSEMBLE_FILE = "ensemble.json"


@dataclass(frozen=True)
class PredictionRow:
    file: str
    class_id: str
    class_name: str
    confidence: float
    top5: tuple[tuple[str, float], ...]
    members: tuple[str, ...] = ()  # each ensemble member's top-1 class ID; empty for one model


def collect_test_images(root: str | Path, source: Run | ModelSource) -> DatasetIndex:
    """The test split of a dataset folder (its classes must be the source's), or every image of a flat folder."""
    root = Path(root)
    classes = source.classes
    assert classes is not None
    path = source.checkpoint_path if isinstance(source, Run) else source.path
    try:
        index = read_dataset(root)
    except DatasetLayoutError:
        index = None
    if index is not None and "test" in index.splits:
        if "train" in index.splits:
            try:
                classes.require_same(index.classes, f"the data in {root}")
            except ClassTableError as e:
                raise UserError(f"checkpoint {path} does not fit this dataset: {e}") from None
        return index.split("test")
    if not root.is_dir():
        found = "is a file, not a folder" if root.exists() else "does not exist"
        raise UserError(f"--data {root} {found}; pass a dataset with a test/ folder, or a folder of images")
    files = [p for p in list_dir(root) if p.is_file() and not is_hidden(p) and is_image_file(p)]
    if not files:
        raise UserError(f"no test images in {root}: expected a dataset with a test/ folder or a flat folder of images")
    return DatasetIndex(root, "folder", classes, [Sample(p, None, "test", p.name) for p in files])


def predict_ensemble(ensemble: Ensemble, index: DatasetIndex, batch_size: int = 32,
                     progress: bool = True) -> list[PredictionRow]:
    """Top-5 per image of the ensemble's mean probabilities (one run: its own, at its temperature), with
    each member's top-1 when there are several members."""
    result = infer_source(ensemble, index, batch_size=batch_size, progress=progress, desc="predict", amp=False)
    return prediction_rows(index, ensemble.classes, result)


def prediction_rows(index: DatasetIndex, classes: ClassTable, result: EnsembleInference) -> list[PredictionRow]:
    """One row per predicted image of any source's outputs (:func:`infer_source`), with each member's
    top-1 when there are several members; an image the loader skipped (undecodable) is refused."""
    members = result.members if len(result.members) > 1 else ()
    return _rows(index, classes, result.reference.indices, result.probabilities, members)


def _rows(index: DatasetIndex, classes: ClassTable, positions: torch.Tensor, probs: torch.Tensor,
          members: Sequence[torch.Tensor] = ()) -> list[PredictionRow]:
    k = min(5, probs.shape[1])
    top_p, top_i = probs.topk(k, dim=1)
    member_top1 = torch.stack([m.argmax(dim=1) for m in members], dim=1).tolist() if members else None
    rows = []
    for row, (pos, ps, ids) in enumerate(zip(positions.tolist(), top_p.tolist(), top_i.tolist(), strict=True)):
        sample = index.samples[pos]
        own = tuple(classes.id_of(i) for i in member_top1[row]) if member_top1 is not None else ()
        rows.append(PredictionRow(sample.image_id, classes.id_of(ids[0]), classes.name_of(ids[0]), ps[0],
                                  tuple((classes.id_of(i), p) for i, p in zip(ids, ps, strict=True)), own))
    skipped = len(index) - len(rows)
    if skipped:
        raise UserError(f"{skipped} test image(s) could not be decoded; run `fgvc data check` on the data")
    return rows


def write_predictions(out_dir: str | Path, rows: list[PredictionRow], groupname: str | None,
                      setup: dict | None = None) -> tuple[Path, ...]:
    """``predictions.csv`` (file, class_id, class_name, confidence, top5, then ``model<i>_class_id`` per
    ensemble member) and, with a ``groupname`` (a competition's notion), ``submission.json``; with
    ``setup`` (:meth:`Ensemble.setup`) also ``ensemble.json``. Returns the paths written."""
    from ..errors import OutputError, output_error

    out_dir = Path(out_dir)
    duplicates = [f for f, n in Counter(r.file for r in rows).items() if n > 1]
    if duplicates:
        raise UserError(f"test image names must be unique for a submission; repeated: {', '.join(duplicates[:5])}")
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"--out {out_dir} must be a folder, but a file is in the way there: fgvc predict "
                          "writes predictions.csv and submission.json into the --out folder; pass another --out "
                          "(a new or existing folder) or move the file")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(out_dir, e, "create the --out folder") from e
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    members = len(rows[0].members) if rows else 0
    writer.writerow(["file", "class_id", "class_name", "confidence", "top5",
                     *(f"model{i}_class_id" for i in range(1, members + 1))])
    for r in rows:
        writer.writerow([r.file, r.class_id, r.class_name, f"{r.confidence:.6f}",
                         " ".join(f"{cid}:{p:.4f}" for cid, p in r.top5), *r.members])
    csv_path, json_path = out_dir / "predictions.csv", out_dir / "submission.json"
    atomic_write_text(csv_path, buffer.getvalue())
    written = [csv_path]
    if groupname is not None:
        write_submission(json_path, {r.file: r.class_id for r in rows}, groupname)
        written.append(json_path)
    if setup is not None:
        written.append(out_dir / ENSEMBLE_FILE)
        atomic_write_json(written[-1], setup)
    return tuple(written)
