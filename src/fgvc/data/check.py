"""``fgvc data check``: the pre-flight report a person reads before spending a GPU-day.

Reads the layout (every reader's problems), then decodes every image exactly as training will,
and collects class balance, image sizes, load-time conversions (colour modes, EXIF orientation),
duplicates across splits and every problem with its path. Usable = no error-level problem.

Image counts are of the files each split lists; the images that cannot be decoded are counted
among them and said apart ("train 69 (3 unreadable)"), while the per-class counts are of readable
images only, so the classes sum to the readable total.
"""

from __future__ import annotations

import hashlib
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .decode import NEEDS_CONVERSION, ImageDecodeError, decode_image
from .formats import detect_format, read_dataset
from .index import DatasetIndex, DatasetLayoutError, Problem, Sample

__all__ = ["CheckReport", "check_dataset", "check_index", "problems_for_training"]

DEFAULT_MIN_SIDE = 32  # px; smaller images carry too little detail to be worth a fine-grained label
EXIF_ROTATED = "EXIF-rotated"  # the conversions key of images turned upright by their EXIF orientation
_EXAMPLES = 3  # paths shown per kind of conversion; the count is always given in full


@dataclass(frozen=True)
class _ImageInfo:
    sample: Sample
    width: int = 0
    height: int = 0
    mode: str = ""
    digest: str = ""
    exif_rotated: bool = False
    error: ImageDecodeError | None = None


@dataclass
class CheckReport:
    root: Path
    format: str
    class_ids: list[str]
    split_counts: dict[str, int]
    images_per_class: dict[str, int]  # readable (decodable) images of the train split
    sizes: dict[str, list[int]]  # "width"/"height": [min, median, max]
    conversions: Counter
    ignored: Counter
    problems: list[Problem] = field(default_factory=list)
    with_boxes: int = 0  # images with a true object box
    unreadable: dict[str, int] = field(default_factory=dict)  # per split: listed images that cannot be decoded
    conversion_examples: dict[str, list[Path]] = field(default_factory=dict)  # the first few paths per kind

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity not in ("error", "info")]

    @property
    def notes(self) -> list[Problem]:
        """What a reader inferred and states so a person can check it (e.g. 1-based labels)."""
        return [p for p in self.problems if p.severity == "info"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        counts = list(self.images_per_class.values())
        return {
            "root": str(self.root),
            "format": self.format,
            "usable": self.ok,
            "num_classes": len(self.class_ids),
            "class_ids": self.class_ids,
            "split_counts": self.split_counts,  # every image file listed, readable or not
            "unreadable_per_split": {k: self.unreadable.get(k, 0) for k in self.split_counts},
            "images_per_class": self.images_per_class,  # readable train images
            "images_per_class_summary": _summary(counts),
            "image_sizes": self.sizes,
            "converted_to_rgb": {k: n for k, n in self.conversions.items() if k != EXIF_ROTATED},
            "converted_at_load": {
                kind: {"count": n, "examples": [str(p) for p in self.conversion_examples.get(kind, [])]}
                for kind, n in self.conversions.items()
            },
            "images_with_boxes": self.with_boxes,
            "ignored": dict(self.ignored),
            "problems": [
                {"severity": p.severity, "kind": p.kind, "path": str(p.path), "message": p.message}
                for p in self.problems
            ],
        }

    def to_text(self) -> str:
        counts = list(self.images_per_class.values())
        lines = [
            f"dataset:  {self.root}",
            f"format:   {self.format}",
            f"classes:  {len(self.class_ids)}",
            "images:   " + ", ".join(
                f"{k} {v}" + (f" ({self.unreadable[k]} unreadable)" if self.unreadable.get(k) else "")
                for k, v in self.split_counts.items()
            ),
        ]
        if counts:
            lo, med, hi = _summary(counts)
            readable = ", readable" if self.unreadable.get("train") else ""
            lines.append(f"per class (train{readable}): min {lo}, median {med:g}, max {hi}")
        if self.sizes:
            w, h = self.sizes["width"], self.sizes["height"]
            lines.append(f"image size (w x h): min {w[0]}x{h[0]}, median {w[1]}x{h[1]}, max {w[2]}x{h[2]}")
        total = sum(self.split_counts.values())
        lines.append(f"boxes:    {self.with_boxes} of {total} images" if self.with_boxes else "boxes:    none")
        if self.conversions:
            lines.append("converted at load time (the files are left as they are):")
            for kind in sorted(self.conversions, key=lambda k: (k == EXIF_ROTATED, k)):
                examples = [str(p) for p in self.conversion_examples.get(kind, [])]
                n = self.conversions[kind]
                shown = ", ".join(examples) + (f" (+{n - len(examples)} more)" if n > len(examples) else "")
                words = (f"{kind} to RGB" if kind != EXIF_ROTATED
                         else "rotated (or flipped) as their EXIF orientation tag says")
                lines.append(f"  {n} {words}" + (f": {shown}" if examples else ""))
        if self.ignored:
            lines.append("ignored: " + ", ".join(f"{n} {kind} file(s)" for kind, n in sorted(self.ignored.items())))
        lines.append(f"problems: {len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        lines += [f"  {p}" for p in self.errors + self.warnings]
        if self.notes:
            lines.append("notes:")
            lines += [f"  {p}" for p in self.notes]
        lines.append("result:   usable" if self.ok else "result:   NOT usable: fix the errors above")
        return "\n".join(lines)


def _summary(values: list[int]) -> list[float]:
    return [min(values), statistics.median(values), max(values)] if values else []


def _inspect(sample: Sample, crop_bottom_px: int) -> _ImageInfo:
    try:
        data = sample.path.read_bytes()
    except OSError as e:
        return _ImageInfo(sample, error=ImageDecodeError(sample.path, "unreadable", str(e), "Check permissions."))
    try:
        rgb, mode, orientation = decode_image(sample.path, data, crop_bottom_px)
    except ImageDecodeError as e:
        return _ImageInfo(sample, error=e)
    return _ImageInfo(sample, rgb.width, rgb.height, mode, hashlib.sha1(data).hexdigest(), orientation != 1)


def check_dataset(root: str | Path, format: str | None = None, min_side: int = DEFAULT_MIN_SIDE,
                  workers: int = 4, **reader_options: Any) -> CheckReport:
    """Read ``root`` and check every image; a layout that cannot be read is one error in the report."""
    try:
        index = read_dataset(root, format, **reader_options)
    except DatasetLayoutError as e:
        if not Path(root).is_dir():  # nothing to report on: a one-line error is clearer
            raise
        return CheckReport(Path(root), format or _detected(root), [], {}, {}, {}, Counter(), Counter(),
                           [Problem("layout", Path(root), str(e).removeprefix(f"{e.root}: "))])  # path said once
    return check_index(index, min_side=min_side, workers=workers)


def problems_for_training(root: str | Path, format: str | None = None, options: Mapping[str, Any] | None = None,
                          workers: int = 4) -> list[str]:
    """Every error-level problem of ``root``, one line each: the full ``fgvc data check`` (layout and
    every image decoded), so that a refused training start can list all problems at once.

    ``format`` is a reader name, or None / "auto" (detect); ``options`` are the reader options
    (``data.options``). Warnings and notes are left out. Each entry reads
    ``[error] <kind>: <path>: <message>`` (a layout the reader refuses outright is one entry whose
    message spans lines: the expected and the found tree).
    """
    try:
        report = check_dataset(root, None if format == "auto" else format, workers=workers, **dict(options or {}))
    except DatasetLayoutError as e:  # not a folder at all
        return [str(Problem("layout", Path(root), e.problem))]
    return [str(p) for p in report.errors]


def _detected(root: str | Path) -> str:
    """The detected format of a folder its reader refused, for the report's format line."""
    try:
        return detect_format(root)
    except DatasetLayoutError:
        return "unknown"


def check_index(index: DatasetIndex, min_side: int = DEFAULT_MIN_SIDE, workers: int = 4) -> CheckReport:
    problems = list(index.problems)
    # Pillow releases the GIL while decoding, so threads overlap file reads and decodes.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        infos = list(pool.map(lambda s: _inspect(s, index.crop_bottom_px), index.samples))

    conversions: Counter = Counter()
    examples: dict[str, list[Path]] = defaultdict(list)
    unreadable: Counter = Counter()
    by_digest: dict[str, list[Sample]] = defaultdict(list)
    good = []
    for info in infos:
        if info.error is not None:
            problems.append(Problem(info.error.kind, info.sample.path, f"{info.error.reason}. {info.error.fix}"))
            unreadable[info.sample.split] += 1
            continue
        good.append(info)
        kinds = [NEEDS_CONVERSION[info.mode]] if info.mode in NEEDS_CONVERSION else []
        for kind in kinds + ([EXIF_ROTATED] if info.exif_rotated else []):
            conversions[kind] += 1
            if len(examples[kind]) < _EXAMPLES:
                examples[kind].append(info.sample.path)
        if min(info.width, info.height) < min_side:
            problems.append(Problem("too-small", info.sample.path,
                                    f"{info.width}x{info.height} px, below the minimum side of {min_side} px",
                                    "warning"))
        by_digest[info.digest].append(info.sample)
    problems += _duplicate_problems(by_digest)

    per_class = Counter(i.sample.label for i in good if i.sample.split == "train")
    sizes = {}
    if good:
        sizes = {"width": [int(v) for v in _summary([i.width for i in good])],
                 "height": [int(v) for v in _summary([i.height for i in good])]}
    return CheckReport(
        root=index.root,
        format=index.format,
        class_ids=list(index.classes.ids),
        split_counts=dict(Counter(s.split for s in index.samples)),
        images_per_class={cid: per_class.get(i, 0) for i, cid in enumerate(index.classes.ids)},
        sizes=sizes,
        conversions=conversions,
        ignored=Counter(index.ignored),
        problems=problems,
        with_boxes=sum(s.box_xyxy is not None for s in index.samples),
        unreadable=dict(unreadable),
        conversion_examples=dict(examples),
    )


def _duplicate_problems(by_digest: dict[str, list[Sample]]) -> list[Problem]:
    """Identical files across splits leak the test set; across classes they contradict each other."""
    problems = []
    for samples in by_digest.values():
        if len(samples) < 2:
            continue
        first = samples[0]
        for other in samples[1:]:
            if other.split != first.split:
                problems.append(Problem(
                    "duplicate-across-splits", other.path,
                    f"same content as {first.path} ({first.split} vs {other.split}): the {other.split} score "
                    "would reward memorising; remove one copy", "warning"))
            elif other.label is not None and first.label is not None and other.label != first.label:
                problems.append(Problem("duplicate-across-classes", other.path,
                                        f"same content as {first.path} but another class", "warning"))
    return problems
