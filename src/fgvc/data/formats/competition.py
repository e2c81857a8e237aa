"""The competition layout: labelled class folders for training, one flat unlabelled test folder.

Expected tree::

    ROOT/
      train/
        04615_Black_footed_Albatross/   <classID>_<className>: the ID is kept as spelled ("04615")
          *.jpg|*.jpeg|*.png|...
        04780_Sooty_Albatross/
          ...
      test/                             flat; an image's ID is its file name
        0742e155-1759-4f20-8d18-36f87d36a194.jpg
      test_labels.csv                   optional: file,class_id (when a labelled test split exists)
      class_labels.txt                  optional: lines "index classID" pinning the index order
      bounding_boxes.csv                optional: file,x,y,width,height (file relative to ROOT)

Class indices follow ClassTable's order (numeric order of the IDs) unless ``class_labels.txt``
pins another; then it must list exactly the folders' IDs.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from ...errors import DataError
from ..classes import ClassTable, ClassTableError
from ..index import DatasetIndex, DatasetLayoutError, Problem, Sample, is_hidden, list_dir
from ..labels_csv import LabelsFileError, read_labels_csv
from ._files import image_files, read_boxes_csv, same_number_ids
from ._registry import register_format

__all__ = ["COMPETITION_TREE", "looks_like_competition", "read_competition", "parse_class_folder", "parse_class_list"]

COMPETITION_TREE = """\
ROOT/
  train/<classID>_<className>/*.jpg   e.g. train/04615_Black_footed_Albatross/a.jpg
  test/*.jpg                          flat, unlabelled; the file name is the image ID
  test_labels.csv                     optional: file,class_id
  class_labels.txt                    optional: "index classID" per line
  bounding_boxes.csv                  optional: file,x,y,width,height"""

_CLASS_FOLDER = re.compile(r"^(\d+)_(.+)$")


def parse_class_folder(name: str) -> tuple[str, str] | None:
    """``04780_Sooty_Albatross`` -> (``04780``, ``Sooty Albatross``); None when it does not match."""
    m = _CLASS_FOLDER.match(name)
    if not m:
        return None
    return m.group(1), m.group(2).replace("_", " ").strip()


def looks_like_competition(root: Path) -> bool:
    train = root / "train"
    if not train.is_dir():
        return False
    folders = [p for p in list_dir(train) if p.is_dir() and not is_hidden(p)]
    named = [p for p in folders if parse_class_folder(p.name)]
    test = root / "test"
    test_is_flat = test.is_dir() and not any(p.is_dir() for p in test.iterdir() if not is_hidden(p))
    return bool(named) and (len(named) * 2 >= len(folders)) and (test_is_flat or not test.exists())


def read_competition(root: str | Path) -> DatasetIndex:
    root = Path(root)
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise DatasetLayoutError(root, "no train/ folder", COMPETITION_TREE,
                                 "point fgvc at the folder that contains train/ and test/")
    problems: list[Problem] = []
    ignored: Counter = Counter()

    class_files: dict[str, list[Path]] = {}
    names: dict[str, str] = {}
    sources: dict[str, str] = {}
    for folder in list_dir(train_dir):
        if is_hidden(folder):
            ignored["hidden"] += 1
            continue
        if not folder.is_dir():
            problems.append(Problem("file-outside-class-folder", folder,
                                    "train/ should hold only class folders; file ignored", "warning"))
            continue
        parsed = parse_class_folder(folder.name)
        if parsed is None:
            problems.append(Problem(
                "bad-folder-name", folder,
                "does not match <classID>_<className> (e.g. 04615_Black_footed_Albatross); folder skipped",
            ))
            continue
        class_id, name = parsed
        if class_id in class_files:
            problems.append(Problem("duplicate-class-id", folder,
                                    f"class ID {class_id} also used by {sources[class_id]}"))
            continue
        files = image_files(folder, problems, ignored)
        if not files:
            problems.append(Problem("empty-class", folder, "class folder has no images; class skipped"))
            continue
        class_files[class_id], names[class_id], sources[class_id] = files, name, folder.name

    for class_id, other in same_number_ids(class_files).items():
        problems.append(Problem(
            "duplicate-class-id", train_dir / sources[class_id],
            f"class ID {class_id} is the same number as {other} (folder {sources[other]}); rename one folder "
            "so that every class has a distinct ID; folder skipped"))
        del class_files[class_id], names[class_id], sources[class_id]

    if not class_files:
        raise DatasetLayoutError(root, "train/ has no usable <classID>_<className> folders with images",
                                 COMPETITION_TREE)
    try:
        classes = ClassTable.from_ids(class_files, names, sources)
    except ClassTableError as e:
        raise DatasetLayoutError(root, str(e), COMPETITION_TREE) from None
    classes = _apply_class_list(root, classes)

    boxes = read_boxes_csv(root / "bounding_boxes.csv", root, COMPETITION_TREE) \
        if (root / "bounding_boxes.csv").is_file() else {}

    def box_of(path: Path) -> tuple[float, float, float, float] | None:
        return boxes.get(path.relative_to(root).as_posix())

    samples = [
        Sample(path, classes.index_of(cid), "train", path.relative_to(train_dir).as_posix(), box_of(path))
        for cid in classes.ids for path in class_files[cid]
    ]
    samples += _read_test(root, classes, problems, ignored, box_of)
    return DatasetIndex(root, "competition", classes, samples, problems, ignored)


def _read_test(root: Path, classes: ClassTable, problems: list[Problem], ignored: Counter, box_of) -> list[Sample]:
    test_dir = root / "test"
    if not test_dir.is_dir():
        return []
    files = image_files(test_dir, problems, ignored)
    labels: dict[str, str] = {}
    labels_file = root / "test_labels.csv"
    if labels_file.is_file():
        try:
            labels = read_labels_csv(labels_file)
        except LabelsFileError as e:  # the train split is still worth a report
            reason = str(e).removeprefix(f"{labels_file}: ")
            problems.append(Problem("bad-labels-file", labels_file, f"{reason}; test images left unlabelled"))
            labels = {}
    if labels:
        names = {p.name for p in files}
        for missing in sorted(set(labels) - names):
            problems.append(Problem("missing-test-image", test_dir / missing, "listed in test_labels.csv, not found"))
        for unlabelled in sorted(names - set(labels)):
            problems.append(Problem("unlabelled-test-image", test_dir / unlabelled,
                                    "not listed in test_labels.csv", "warning"))
    samples = []
    for path in files:
        class_id = labels.get(path.name)
        label = None
        if class_id is not None:
            if class_id in classes:
                label = classes.index_of(class_id)
            else:
                problems.append(Problem("unknown-class", path,
                                        f"test_labels.csv gives class {class_id!r}, which train/ lacks"))
        samples.append(Sample(path, label, "test", path.name, box_of(path)))
    return samples


def parse_class_list(text: str, *, bare_ids: bool = False) -> list[str]:
    """The class IDs of a class list in index order: lines ``index classID`` whose indices are 0..N-1, each
    once (the file order does not matter); with ``bare_ids``, a file of ``classID`` lines (in file order) too.

    The one reader of class lists (the competition layout's ``class_labels.txt``, ``fgvc server init
    --classes``); a :class:`DataError` names the line, its caller the file."""
    listed: dict[int, str] = {}
    bare: list[str] = []
    expected = "'index classID' or 'classID'" if bare_ids else "'index classID'"
    for line_no, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) == 2 and parts[0].isdigit() and not bare:
            if int(parts[0]) in listed:
                raise DataError("indices must be 0..N-1, each once")
            listed[int(parts[0])] = parts[1]
        elif len(parts) == 1 and bare_ids and not listed:
            bare.append(parts[0])
        else:
            raise DataError(f"line {line_no}: expected {expected}, got {line!r}")
    if sorted(listed) != list(range(len(listed))):
        raise DataError("indices must be 0..N-1, each once")
    ids = bare or [listed[i] for i in range(len(listed))]
    if not ids:
        raise DataError("lists no class IDs")
    if len(set(ids)) != len(ids):
        twice = sorted(i for i, n in Counter(ids).items() if n > 1)
        raise DataError(f"lists class ID(s) {', '.join(twice[:10])} more than once")
    return ids


def _apply_class_list(root: Path, classes: ClassTable) -> ClassTable:
    """Reorder by ``class_labels.txt`` ("index classID"), which must list exactly the folders' IDs."""
    path = root / "class_labels.txt"
    if not path.is_file():
        return classes
    try:
        ordered = parse_class_list(path.read_text(encoding="utf-8-sig"))
    except DataError as e:
        raise DatasetLayoutError(root, f"class_labels.txt {e}", COMPETITION_TREE) from None
    pinned = ClassTable(tuple(ordered), tuple(
        classes.names[classes.index_of(i)] if i in classes else i for i in ordered))
    diff = classes.diff(pinned)
    if diff.missing or diff.extra:
        raise DatasetLayoutError(
            root, "class_labels.txt does not match the train/ folders:\n"
            + diff.describe("the train/ folders", "class_labels.txt"), COMPETITION_TREE,
            "list every train/ folder's ID exactly as the folder spells it (e.g. 04615, not 4615), or delete "
            "class_labels.txt to use numeric order",
        )
    return pinned


register_format("competition", reader=read_competition, detector=looks_like_competition, tree=COMPETITION_TREE,
                priority=50)
