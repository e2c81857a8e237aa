"""DatasetIndex: what every format reader returns, and what everything downstream consumes.

Readers only list files and parse annotation text; they never decode images (that is the
Dataset's job at load time, and ``fgvc data check``'s job before training).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import DataError
from .classes import ClassTable

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataFolderNotFoundError",
    "DatasetIndex",
    "DatasetLayoutError",
    "Problem",
    "Sample",
    "is_hidden",
    "is_image_file",
    "list_dir",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
_HIDDEN_NAMES = frozenset({"thumbs.db", "desktop.ini", "__macosx"})


def is_hidden(path: Path) -> bool:
    """Operating-system clutter (``.DS_Store``, ``._x.jpg``, ``Thumbs.db``): ignored, but counted."""
    return path.name.startswith(".") or path.name.casefold() in _HIDDEN_NAMES


def is_image_file(path: Path) -> bool:
    return path.suffix.casefold() in IMAGE_EXTENSIONS


def list_dir(path: Path) -> list[Path]:
    """Directory entries in a stable (sorted) order, never ``os.listdir`` order."""
    return sorted(path.iterdir(), key=lambda p: p.name)


class DatasetLayoutError(DataError):
    """The folder is not in the layout the reader expects. The message shows the expected tree."""

    def __init__(self, root: Path, problem: str, expected_tree: str, fix: str = "") -> None:
        found = _describe_folder(root)
        msg = (
            f"{root}: {problem}\n\nExpected layout:\n{_indent(expected_tree.strip())}\n\n"
            f"Found instead:\n{_indent(found)}"
        )
        if fix:
            msg += f"\n\nFix: {fix}"
        super().__init__(msg)
        self.root = root
        self.problem = problem


class DataFolderNotFoundError(DatasetLayoutError):
    """The dataset path is not a folder at all: no layout applies, so no layout block is shown."""

    def __init__(self, root: Path) -> None:
        reason = "the path does not exist" if not root.exists() else "it is a file, not a folder"
        problem = f"data folder not found ({reason})"
        DataError.__init__(self, f"{root}: {problem}\nFix: check the dataset path; it must be the folder "
                                 "that holds the images and annotation files")
        self.root = root
        self.problem = problem


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _describe_folder(root: Path, limit: int = 12) -> str:
    if not root.exists():
        return f"{root} does not exist"
    if not root.is_dir():
        return f"{root} is a file, not a folder"
    entries = [p for p in list_dir(root) if not is_hidden(p)]
    if not entries:
        return f"{root.name}/ (empty)"
    lines = [f"{root.name}/"]
    for p in entries[:limit]:
        lines.append(f"  {p.name}/" if p.is_dir() else f"  {p.name}")
    if len(entries) > limit:
        lines.append(f"  ... ({len(entries) - limit} more)")
    return "\n".join(lines)


@dataclass(frozen=True)
class Problem:
    """One thing found in the data, tied to a path. ``error`` blocks training; ``warning`` does not;
    ``info`` states a fact a reader inferred (e.g. that labels are 1-based) so that it can be checked."""

    kind: str
    path: Path
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        return f"[{self.severity}] {self.kind}: {self.path}: {self.message}"


@dataclass(frozen=True)
class Sample:
    """One image.

    ``label`` is an index into the ClassTable (``None`` when the split is unlabelled).
    ``box_xyxy`` is the true object box in original-image pixels, x = column, as
    ``(x0, y0, x1, y1)`` with x1/y1 exclusive (CUB's ``x, y, w, h`` gives ``(x, y, x + w, y + h)``).
    ``image_id`` is the name the outside world uses for the image (the test file name in the
    competition's submission JSON).
    """

    path: Path
    label: int | None
    split: str
    image_id: str
    box_xyxy: tuple[float, float, float, float] | None = None


@dataclass
class DatasetIndex:
    """All samples of a dataset with their split, plus its ClassTable and what reading it found."""

    root: Path
    format: str
    classes: ClassTable
    samples: list[Sample]
    problems: list[Problem] = field(default_factory=list)
    ignored: Counter = field(default_factory=Counter)  # e.g. {"hidden": 3}
    crop_bottom_px: int = 0  # rows cut off every image at load time (FGVC-Aircraft's copyright banner)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    @property
    def splits(self) -> list[str]:
        return list(dict.fromkeys(s.split for s in self.samples))

    def split(self, *names: str) -> DatasetIndex:
        """The samples of the named split(s); raises naming the splits that exist."""
        unknown = [n for n in names if n not in self.splits]
        if unknown:
            raise KeyError(
                f"{self.root}: no {'/'.join(unknown)} split in this {self.format} dataset; "
                f"it has: {', '.join(self.splits) or 'no samples'}"
            )
        return replace(self, samples=[s for s in self.samples if s.split in names])

    def with_samples(self, samples: Iterable[Sample]) -> DatasetIndex:
        return replace(self, samples=list(samples))

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.samples]

    @property
    def labels(self) -> list[int | None]:
        return [s.label for s in self.samples]

    @property
    def has_labels(self) -> bool:
        return bool(self.samples) and all(s.label is not None for s in self.samples)

    @property
    def has_boxes(self) -> bool:
        return bool(self.samples) and all(s.box_xyxy is not None for s in self.samples)

    def class_counts(self) -> list[int]:
        counts = [0] * len(self.classes)
        for s in self.samples:
            if s.label is not None:
                counts[s.label] += 1
        return counts
