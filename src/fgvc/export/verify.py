"""Every export is checked on real images before it is written: the exported file, loaded back from
its bytes, must give the same top-1 as the eager model on each image, logits within
:data:`RELATIVE_TOLERANCE` of the image's largest logit, and the same object boxes.

The images are a handful of the run's validation images (else its dataset's test images, else a
folder given with ``--data``), preprocessed exactly as ``fgvc predict`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..data.classes import ClassTable
from ..data.decode import load_rgb
from ..data.index import is_hidden, is_image_file, list_dir
from ..engine.run import Run
from ..errors import FgvcError
from .formats import ExportError
from .metadata import Preprocessing
from .runtime import ExportedModel, ExportedOutputs

__all__ = ["RELATIVE_TOLERANCE", "VerificationImages", "ImageCheck", "Verification", "VerificationError",
           "verification_images", "compare"]

RELATIVE_TOLERANCE = 1e-4  # max |exported - eager| over an image's logits, divided by its largest |eager logit|


@dataclass(frozen=True)
class VerificationImages:
    """The images an export is checked on, and where they came from (for the printed comparison)."""

    paths: list[Path]
    names: list[str]
    origin: str
    crop_bottom_px: int = 0

    def tensor(self, preprocessing: Preprocessing) -> Tensor:
        """Normalised float batch, exactly as the run's loader builds it (8-bit geometry, then float)."""
        image = preprocessing.image_transform()
        batch = torch.stack([image(load_rgb(p, self.crop_bottom_px)) for p in self.paths])
        return preprocessing.batch_transform()(batch)


def _folder_images(folder: Path, count: int) -> list[Path]:
    files = [p for p in list_dir(folder) if p.is_file() and not is_hidden(p) and is_image_file(p)]
    return sorted(files)[:count]


def verification_images(run: Run, data_root: str | Path | None = None, count: int = 8) -> VerificationImages:
    """Up to ``count`` validation images of the run (or test images, or images of a flat folder)."""
    root = Path(data_root) if data_root is not None else None
    tried: list[str] = []
    for split, origin in (("val", "validation"), ("test", "test")):
        try:
            index = run.evaluation_split("val", root) if split == "val" else run.dataset(root).split("test")
        except (FgvcError, KeyError) as e:
            tried.append(f"{origin}: {str(e).splitlines()[0][:160]}")
            continue
        samples = index.samples[:count]
        if samples:
            return VerificationImages([s.path for s in samples], [s.image_id for s in samples],
                                      f"{len(samples)} {origin} images of {index.root}", index.crop_bottom_px)
    if root is not None and root.is_dir():
        paths = _folder_images(root, count)
        if paths:
            return VerificationImages(paths, [p.name for p in paths], f"{len(paths)} images of {root}")
    where = f"--data {root}" if root is not None else f"the run's data ({run.config.data.root})"
    raise ExportError(f"no images to verify the export on in {where} ({'; '.join(tried)}); pass --data ROOT "
                      "(the run's dataset, or a folder of images)")


@dataclass(frozen=True)
class ImageCheck:
    name: str
    eager_top1: str
    exported_top1: str
    max_abs: float
    relative: float
    boxes_equal: bool | None  # None: the model does not localise

    @property
    def ok(self) -> bool:
        return (self.eager_top1 == self.exported_top1 and self.relative <= RELATIVE_TOLERANCE
                and self.boxes_equal is not False)


@dataclass
class Verification:
    origin: str
    runtime: str
    batches: str  # which batch sizes the exported file was run with
    checks: list[ImageCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def summary(self) -> str:
        n = len(self.checks)
        agree = sum(c.eager_top1 == c.exported_top1 for c in self.checks)
        worst = max((c.relative for c in self.checks), default=0.0)
        text = (f"top-1 agrees on {agree}/{n}; largest relative logit difference {worst:.1e} "
                f"(limit {RELATIVE_TOLERANCE:.0e})")
        boxes = [c.boxes_equal for c in self.checks if c.boxes_equal is not None]
        if boxes:
            text += f"; object boxes equal on {sum(boxes)}/{len(boxes)}"
        return text

    def to_text(self) -> str:
        width = max([len("image"), *(len(c.name) for c in self.checks)])
        lines = [f"verified on {self.origin} with {self.runtime}, {self.batches}:",
                 f"  {'image':<{width}}  {'eager top-1':>12}  {'export top-1':>12}  {'max |Δlogit|':>12}  "
                 f"{'relative':>9}  box"]
        for c in self.checks:
            box = "-" if c.boxes_equal is None else ("same" if c.boxes_equal else "DIFFERS")
            mark = "" if c.ok else "  <- differs"
            lines.append(f"  {c.name:<{width}}  {c.eager_top1:>12}  {c.exported_top1:>12}  {c.max_abs:>12.2e}  "
                         f"{c.relative:>9.1e}  {box}{mark}")
        lines.append(("OK: " if self.ok else "FAILED: ") + self.summary())
        return "\n".join(lines)


class VerificationError(ExportError):
    """The exported file does not reproduce the model; ``verification`` holds the comparison."""

    def __init__(self, message: str, verification: Verification) -> None:
        super().__init__(message)
        self.verification = verification


def compare(names: Sequence[str], classes: ClassTable, eager: ExportedOutputs,
            exported: ExportedOutputs) -> list[ImageCheck]:
    """Per image: top-1 of both, the largest logit difference (absolute and relative), boxes equal."""
    checks = []
    for i, name in enumerate(names):
        a, b = eager.logits[i].double(), exported.logits[i].double()
        max_abs = float((a - b).abs().max())
        relative = max_abs / max(float(a.abs().max()), 1e-12)
        boxes = None
        if eager.object_boxes is not None:
            boxes = exported.object_boxes is not None and bool(
                torch.equal(eager.object_boxes[i].to(torch.int64), exported.object_boxes[i].to(torch.int64)))
        checks.append(ImageCheck(name, classes.id_of(int(a.argmax())), classes.id_of(int(b.argmax())), max_abs,
                                 relative, boxes))
    return checks


def verify(model: ExportedModel, images: VerificationImages, x: Tensor, eager: ExportedOutputs) -> Verification:
    """Run the exported ``model`` on the batch ``x`` (and, for a free batch size, on its first image
    alone) and compare with the eager outputs; the worse result of the two runs is kept per image."""
    whole = model(x)
    checks = compare(images.names, model.classes, eager, whole)
    batches = f"batch of {len(x)}" if model.metadata.batch is None else f"fixed batch of {model.metadata.batch}"
    if model.metadata.batch is None and len(x) > 1:
        single = model(x[:1])
        first = ExportedOutputs(eager.logits[:1], None if eager.object_boxes is None else eager.object_boxes[:1])
        alone = compare(images.names[:1], model.classes, first, single)[0]
        if not alone.ok or alone.relative > checks[0].relative:
            checks[0] = alone
        batches += " and batch of 1"
    return Verification(images.origin, model.description, batches, checks)
