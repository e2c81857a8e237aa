"""CUB-200-2011 (Caltech-UCSD Birds): the official text-file annotations.

The real dataset has 200 classes and 11,788 images: 5,994 train and 5,794 test (no val split).
The class ID is the class folder's prefix before the first '.', as spelled (``"001"``); the display
name is the rest with underscores as spaces (``"Black footed Albatross"``); classes are in numeric
order. ``image_id`` is the path in ``images.txt`` (relative to ``images/``). A box ``x y w h`` becomes
``(x, y, x + w, y + h)``. Parts, attributes and segmentations are not read, so they may be absent.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..classes import ClassTable, ClassTableError
from ..index import DatasetIndex, DatasetLayoutError, Sample
from ._files import annotation_lines, require_images, with_tree
from ._registry import register_format

__all__ = ["CUB_TREE", "looks_like_cub", "read_cub"]

CUB_TREE = """\
CUB_200_2011/                  ROOT, or a folder that contains it
  images.txt                   <image_id> <path under images/>   e.g. "1 001.Black_footed_Albatross/<file>.jpg"
  image_class_labels.txt       <image_id> <class number>          e.g. "1 1"
  train_test_split.txt         <image_id> <1=train | 0=test>      e.g. "1 0"
  classes.txt                  <class number> <ID>.<Name>         e.g. "1 001.Black_footed_Albatross"
  bounding_boxes.txt           optional: <image_id> <x> <y> <width> <height>, 0-based pixels
  images/
    001.Black_footed_Albatross/
      Black_Footed_Albatross_0046_18.jpg
      ..."""
__doc__ = with_tree(__doc__, CUB_TREE)

_FOLDER = "CUB_200_2011"
_ANNOTATION_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt",
                     "bounding_boxes.txt")
_SPLITS = {"1": "train", "0": "test"}
T = TypeVar("T")
_FIX = "re-extract CUB_200_2011.tgz, or point to the CUB_200_2011 folder (or the folder that contains it)"


def looks_like_cub(root: Path) -> bool:
    """True when ROOT or ROOT/CUB_200_2011 holds CUB's own annotation files."""
    return _find_dataset_dir(Path(root)) is not None


def read_cub(root: str | Path) -> DatasetIndex:
    """Read all of CUB-200-2011 (train and test) from its text files; images are only checked to exist."""
    root = Path(root)
    base = _find_dataset_dir(root)
    if base is None:
        raise DatasetLayoutError(
            root, f"no CUB-200-2011 annotation files (images.txt, image_class_labels.txt, ...) in {root} "
            f"or {root / _FOLDER}", CUB_TREE, _FIX)

    classes, class_of = _read_classes(base)
    paths = _read_table(base, "images.txt", "<image_id> <path under images/>", n_values=None)
    labels = _read_table(base, "image_class_labels.txt", "<image_id> <class number>",
                         lambda v: _lookup(v, class_of, "a class number that classes.txt does not list"),
                         fix="use the classes.txt and image_class_labels.txt of one copy of CUB-200-2011")
    splits = _read_table(base, "train_test_split.txt", "<image_id> <1=train | 0=test>",
                         lambda v: _lookup(v, _SPLITS, "a split flag other than 1 or 0"))
    boxes = None
    if (base / "bounding_boxes.txt").is_file():
        boxes = _read_table(base, "bounding_boxes.txt", "<image_id> <x> <y> <width> <height>", _box_xyxy, 4)

    _require_all_ids(base, paths, labels, "image_class_labels.txt")
    _require_all_ids(base, paths, splits, "train_test_split.txt")
    if boxes is not None:
        _require_all_ids(base, paths, boxes, "bounding_boxes.txt")

    images_dir = base / "images"
    samples = [
        Sample(images_dir / rel, classes.index_of(labels[image]), splits[image], rel,
               boxes[image] if boxes is not None else None)
        for image, rel in paths.items()
    ]
    require_images(samples, base, CUB_TREE, "image(s) listed in images.txt",
                   "restore the missing files under images/ (re-extract CUB_200_2011.tgz)")
    return DatasetIndex(root=root, format="cub", classes=classes, samples=samples)


def _find_dataset_dir(root: Path) -> Path | None:
    for candidate in (root, root / _FOLDER):
        if any((candidate / name).is_file() for name in _ANNOTATION_FILES):
            return candidate
    return None


def _read_table(base: Path, name: str, form: str, convert: Callable[[str], T] = str,
                n_values: int | None = 1, fix: str = _FIX) -> dict[str, T]:
    """``{first field: convert(rest of line)}``; one line per ID, as every CUB file has.

    ``n_values`` is how many whitespace-separated values follow the ID (None: the rest of the line,
    spaces included). ``convert`` raises ValueError with what is wrong. Lines are stripped, so CRLF,
    a BOM and a missing final newline are all fine; blank lines are skipped.
    """
    table: dict[str, T] = {}
    for line_no, line in annotation_lines(base, name, CUB_TREE, _FIX):
        key, rest = (line.split(maxsplit=1) + [""])[:2]
        try:
            if not rest or (n_values is not None and len(rest.split()) != n_values):
                raise ValueError("wrong number of fields")
            if key in table:
                raise ValueError(f"ID {key} appears a second time")
            table[key] = convert(rest)
        except ValueError as e:
            raise DatasetLayoutError(
                base, f"{name} line {line_no}: {e}: {line!r}; expected {form}", CUB_TREE, fix) from None
    return table


def _lookup(value: str, table: dict[str, str], what: str) -> str:
    if value not in table:
        raise ValueError(f"{value!r} is {what}")
    return table[value]


def _box_xyxy(values: str) -> tuple[float, float, float, float]:
    """``x y w h`` (0-based pixels) -> exclusive ``(x0, y0, x1, y1)``."""
    try:
        x, y, w, h = (float(v) for v in values.split())
    except ValueError:
        raise ValueError("non-numeric box") from None
    return (x, y, x + w, y + h)


def _read_classes(base: Path) -> tuple[ClassTable, dict[str, str]]:
    """The ClassTable and a map from classes.txt's number (``"1"``) to the class ID (``"001"``)."""
    folders = _read_table(base, "classes.txt", "<class number> <ID>.<Name>", n_values=None)
    class_of: dict[str, str] = {}
    names: dict[str, str] = {}
    sources: dict[str, str] = {}
    for number, folder in folders.items():
        class_id, dot, rest = folder.partition(".")
        if not dot or not class_id or not rest:
            problem = f"class {number}: folder {folder!r} is not '<ID>.<Name>'"
        elif class_id in sources:
            problem = f"class ID {class_id!r} is used by both {sources[class_id]!r} and {folder!r}"
        else:
            class_of[number] = class_id
            names[class_id] = rest.replace("_", " ")
            sources[class_id] = folder
            continue
        raise DatasetLayoutError(base, f"classes.txt: {problem}", CUB_TREE,
                                 "each line of classes.txt must be '<number> <ID>.<Name>' with distinct IDs")
    if not class_of:
        raise DatasetLayoutError(base, "classes.txt lists no classes", CUB_TREE, _FIX)
    try:
        table = ClassTable.from_ids(names, names, sources=sources)
    except ClassTableError as e:
        raise DatasetLayoutError(base, f"classes.txt: {e}", CUB_TREE, _FIX) from None
    return table, class_of


def _require_all_ids(base: Path, images: dict[str, str], table: dict[str, object], name: str) -> None:
    absent = [i for i in images if i not in table]
    if absent:
        shown = ", ".join(absent[:10]) + (" ..." if len(absent) > 10 else "")
        raise DatasetLayoutError(
            base, f"{len(absent)} image ID(s) from images.txt have no line in {name}: {shown}", CUB_TREE,
            f"use the {name} that came with this images.txt")


register_format("cub", reader=read_cub, detector=looks_like_cub, tree=CUB_TREE, priority=10)
