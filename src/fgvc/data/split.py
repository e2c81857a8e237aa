"""Seeded, stratified train/validation split carved from the training set.

The split is saved as the list of validation image IDs so that a resumed run (or a later
evaluation) uses exactly the same images; the test split is never touched.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fileio import atomic_write_json
from .index import DatasetIndex

__all__ = ["stratified_split", "save_split", "load_split", "apply_split", "load_saved_split"]

_SHOWN = 5  # image IDs a message names; the count is always given in full


def _some(ids: list[str]) -> str:
    """The first few IDs, and how many more."""
    more = f" ... (+{len(ids) - _SHOWN} more)" if len(ids) > _SHOWN else ""
    return ", ".join(ids[:_SHOWN]) + more


def stratified_split(train: DatasetIndex, val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """Image IDs for (train, val): ``round(n * val_fraction)`` of each class, at least 1 when a class
    has two or more images and the fraction is positive, never all of a class."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_class: dict[int, list[str]] = defaultdict(list)
    for s in train.samples:
        if s.label is None:
            raise ValueError(f"{s.path}: unlabelled image in the training split")
        by_class[s.label].append(s.image_id)
    rng = np.random.default_rng(seed)
    val: set[str] = set()
    for label in sorted(by_class):
        ids = sorted(by_class[label])
        n = len(ids)
        k = round(n * val_fraction)
        k = min(max(k, 1), n - 1) if val_fraction > 0 and n >= 2 else 0
        val.update(ids[j] for j in rng.permutation(n)[:k])
    train_ids = [s.image_id for s in train.samples if s.image_id not in val]
    val_ids = [s.image_id for s in train.samples if s.image_id in val]
    return train_ids, val_ids


def apply_split(train: DatasetIndex, val_ids: list[str],
                source: str = "the saved split") -> tuple[DatasetIndex, DatasetIndex]:
    """Partition ``train`` by a saved list of validation IDs; every listed ID must exist (``source``, e.g.
    the checkpoint they come from, is named when one does not: the data changed, which is no bug)."""
    wanted = set(val_ids)
    known = {s.image_id for s in train.samples}
    missing = sorted(wanted - known)
    if missing:
        raise DataError(
            f"{len(missing)} validation image(s) of {source} are not in the training data in {train.root}: "
            f"{_some(missing)}; the data changed since the split was made: restore those images (or pass --data "
            "the dataset the run was trained on), or start a new run"
        )
    return (train.with_samples(s for s in train.samples if s.image_id not in wanted),
            train.with_samples(s for s in train.samples if s.image_id in wanted))


def save_split(path: str | Path, val_ids: list[str], seed: int, val_fraction: float) -> None:
    atomic_write_json(path, {"seed": seed, "val_fraction": val_fraction, "val": sorted(val_ids)})


def load_split(path: str | Path) -> list[str]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return list(data["val"])


def load_saved_split(path: str | Path, train: DatasetIndex, val_fraction: float, seed: int) -> list[str]:
    """The validation IDs in ``path`` if they are the split this config carves from this data, else a
    one-line refusal: a ``split.json`` left by a start that failed must not decide a later run's
    validation images (a retry with another ``data.val_fraction`` trained on the old split)."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    fix = (f"delete {path} to carve the split anew (no epoch was saved beside it: it is left by a start that did "
           "not finish), or pass another --out")
    saved = (data.get("val_fraction"), data.get("seed"))
    if saved != (val_fraction, seed):
        raise DataError(f"{path} was carved with data.val_fraction={saved[0]}, data.split_seed={saved[1]}, but this "
                        f"run has data.val_fraction={val_fraction}, data.split_seed={seed}: {fix}")
    val_ids = list(data["val"])
    expected = set(stratified_split(train, val_fraction, seed)[1])
    differ = sorted(expected.symmetric_difference(val_ids))
    if differ:
        raise DataError(f"{path} was carved from other training images than those in {train.root} "
                        f"({len(differ)} validation image(s) differ: {_some(differ)}): {fix}")
    return val_ids
