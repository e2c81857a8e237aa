"""A torch Dataset over a DatasetIndex: robust decoding, validated labels, optional skipping.

Each item is a dict ``{"image", "label", "index", "orig_size"}`` where ``label`` is -1 for
unlabelled images and ``orig_size`` is ``(height, width)`` after EXIF orientation and banner
cropping (what box annotations are scaled from).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from ..errors import DataError
from .decode import ImageDecodeError, load_rgb
from .index import DatasetIndex

__all__ = ["FGVCDataset", "LabelError", "collate_skipping", "UNLABELLED"]

log = logging.getLogger(__name__)
UNLABELLED = -1


class LabelError(DataError):
    """A label outside [0, num_classes): caught here, not as a CUDA device-side assert later."""


class FGVCDataset(Dataset):
    """Images of one DatasetIndex, decoded to RGB and passed through ``transform``.

    ``num_classes`` is the size of the model's output; every label is checked against it at
    construction. With ``skip_unreadable`` a file that fails to decode is logged with its path and
    yields ``None``, which :func:`collate_skipping` drops; without it the error names the file.

    ``augment_seed`` (set by the trainer for each epoch): the random augmentation of image ``i`` is
    drawn from a generator seeded with ``(augment_seed, i)``, so it does not depend on which worker
    loads the image, how many workers there are, or where in the epoch a resumed run starts.
    """

    augment_seed: int | None = None

    def __init__(
        self,
        index: DatasetIndex,
        transform: Callable[[Any], torch.Tensor] | None = None,
        num_classes: int | None = None,
        skip_unreadable: bool = False,
    ) -> None:
        self.index = index
        self.samples = list(index.samples)
        self.transform = transform
        self.num_classes = len(index.classes) if num_classes is None else num_classes
        self.skip_unreadable = skip_unreadable
        self._check_labels()

    def _check_labels(self) -> None:
        for s in self.samples:
            if s.label is None:
                continue
            if not isinstance(s.label, int) or not 0 <= s.label < self.num_classes:
                class_id = self.index.classes.id_of(s.label) if (
                    isinstance(s.label, int) and 0 <= s.label < len(self.index.classes)) else "?"
                raise LabelError(
                    f"{s.path}: label {s.label!r} (class ID {class_id}) is outside [0, {self.num_classes}). "
                    f"Labels must be indices into the class table, not raw class IDs; the model has "
                    f"{self.num_classes} outputs and the data {len(self.index.classes)} classes."
                )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any] | None:
        sample = self.samples[i]
        try:
            img = load_rgb(sample.path, self.index.crop_bottom_px)
        except ImageDecodeError as e:
            if not self.skip_unreadable:
                raise
            log.warning("skipped unreadable image %s: %s", e.path, e.reason)
            return None
        orig_size = (img.height, img.width)
        if self.transform is None:
            image = img
        elif self.augment_seed is None:
            image = self.transform(img)
        else:
            outer = torch.get_rng_state()  # the caller's stream (dropout, jitter) is not disturbed
            torch.manual_seed((self.augment_seed * 1_000_003 + i) % 2**63)
            try:
                image = self.transform(img)
            finally:
                torch.set_rng_state(outer)
        return {
            "image": image,
            "label": UNLABELLED if sample.label is None else sample.label,
            "index": i,
            "orig_size": torch.tensor(orig_size),
        }


def collate_skipping(batch: Sequence[dict[str, Any] | None]) -> dict[str, Any] | None:
    """default_collate without the ``None`` items of skipped images; ``skipped`` counts them."""
    kept = [b for b in batch if b is not None]
    if not kept:
        return None
    out = default_collate(kept)
    out["skipped"] = len(batch) - len(kept)
    return out
