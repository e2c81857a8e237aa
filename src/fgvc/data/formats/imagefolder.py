"""Plain class folders, with or without split folders.

Expected tree (either form)::

    ROOT/                         ROOT/
      <class>/*.jpg                 train/<class>/*.jpg
      <class>/*.jpg                 val/<class>/*.jpg      optional
                                    test/<class>/*.jpg     optional
      bounding_boxes.csv            bounding_boxes.csv     optional: file,x,y,width,height

The class ID is the folder name as spelled; the display name replaces underscores with spaces.
Classes are defined by the training folders; a class folder in val/test that train lacks is an
error, since no model trained here could predict it.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..classes import ClassTable, ClassTableError
from ..index import DatasetIndex, DatasetLayoutError, Problem, Sample, is_hidden, list_dir
from ._files import image_files, read_boxes_csv, same_number_ids
from ._registry import register_format

__all__ = ["IMAGEFOLDER_TREE", "SPLIT_FOLDERS", "looks_like_imagefolder", "read_imagefolder"]

IMAGEFOLDER_TREE = """\
ROOT/<class>/*.jpg
or
ROOT/train/<class>/*.jpg   (+ optional val/<class>/*.jpg, test/<class>/*.jpg)"""

SPLIT_FOLDERS = ("train", "val", "test")


def _subfolders(path: Path) -> list[Path]:
    return [p for p in list_dir(path) if p.is_dir() and not is_hidden(p)]


def looks_like_imagefolder(root: Path) -> bool:
    return root.is_dir() and bool(_subfolders(root))


def read_imagefolder(root: str | Path) -> DatasetIndex:
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(root, "not a folder", IMAGEFOLDER_TREE)
    problems: list[Problem] = []
    ignored: Counter = Counter()
    top = _subfolders(root)
    has_splits = (root / "train").is_dir()
    split_dirs = {s: root / s for s in SPLIT_FOLDERS if (root / s).is_dir()} if has_splits else {"train": root}
    if has_splits:
        for extra in top:
            if extra.name not in SPLIT_FOLDERS:
                problems.append(Problem("unexpected-folder", extra,
                                        "beside train/, only val/ and test/ are read; folder ignored", "warning"))

    per_split: dict[str, dict[str, list[Path]]] = {}
    for split, folder in split_dirs.items():
        per_split[split] = {}
        for entry in list_dir(folder):
            if is_hidden(entry):
                ignored["hidden"] += 1
            elif not entry.is_dir():
                if folder is not root or entry.name != "bounding_boxes.csv":
                    problems.append(Problem("file-outside-class-folder", entry,
                                            "expected only class folders here; file ignored", "warning"))
            else:
                files = image_files(entry, problems, ignored)
                if files:
                    per_split[split][entry.name] = files
                else:
                    problems.append(Problem("empty-class", entry, "class folder has no images; skipped"))

    train_classes = per_split["train"]
    clashes = same_number_ids(train_classes)
    for class_id, other in clashes.items():
        problems.append(Problem(
            "duplicate-class-id", split_dirs["train"] / class_id,
            f"class folder {class_id} is the same number as folder {other}; rename one so that every class "
            "has a distinct ID; folder skipped"))
        del train_classes[class_id]
    if not train_classes:
        raise DatasetLayoutError(root, "no class folder with images found" + (" under train/" if has_splits else ""),
                                 IMAGEFOLDER_TREE)
    try:
        classes = ClassTable.from_ids(train_classes, {c: c.replace("_", " ") for c in train_classes})
    except ClassTableError as e:
        raise DatasetLayoutError(root, str(e), IMAGEFOLDER_TREE) from None

    boxes = read_boxes_csv(root / "bounding_boxes.csv", root, IMAGEFOLDER_TREE) \
        if (root / "bounding_boxes.csv").is_file() else {}
    samples = []
    for split, by_class in per_split.items():
        for class_id in sorted(by_class, key=lambda c: classes.index_of(c) if c in classes else len(classes)):
            if class_id in clashes:
                continue  # reported once, for its train folder
            if class_id not in classes:
                problems.append(Problem("unknown-class", split_dirs[split] / class_id,
                                        f"class {class_id!r} is in {split}/ but not in train/; skipped"))
                continue
            label = classes.index_of(class_id)
            for path in by_class[class_id]:
                rel = path.relative_to(root).as_posix()
                samples.append(Sample(path, label, split, path.relative_to(split_dirs[split]).as_posix(),
                                      boxes.get(rel)))
    return DatasetIndex(root, "imagefolder", classes, samples, problems, ignored)


# Last: any folder with subfolders looks like class folders, so every other layout goes first.
register_format("imagefolder", reader=read_imagefolder, detector=looks_like_imagefolder, tree=IMAGEFOLDER_TREE,
                priority=100)
