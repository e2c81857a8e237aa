"""Image lists: ``train.txt`` and ``test.txt`` with one ``<relative path> <integer label>`` per line.

The layout in which MMAL-Net's repository and many other FGVC repositories ship Stanford Cars
(8,144 train and 8,041 test lines, paths under ``cars_train/`` and ``cars_test/``) and FGVC-Aircraft
(6,667 and 3,333 lines in ``data/``, paths under ``data/images/``). The lists sit in ROOT or in
ROOT/data/; an optional ``val.txt`` beside them becomes a val split.

Each list's paths are relative to one folder: the first of the lists' own folder, ROOT,
``cars_<split>/`` and ``images/`` beside the lists that holds the most of the list's first images
(MMAL-Net joins Cars paths to ``cars_train/`` / ``cars_test/`` and Aircraft paths to
``data/images/``; other repositories write paths relative to the list's folder).

Labels are integers, 0-based or 1-based; the reader says which it found as an ``info`` problem.
The class ID is the label as written (``"001"`` stays ``"001"``) and classes are in numeric order,
so 1-based labels 1..N become indices 0..N-1. Display names equal the IDs unless an optional
``classes.txt`` beside the lists gives ``<label> <name>`` lines. ``image_id`` is the image path
relative to ROOT, since Cars reuses file names between its train and test folders. Bad lines,
missing images, and labels that only val/test use are error problems naming the list and line.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..classes import ClassTable
from ..index import DatasetIndex, DatasetLayoutError, Problem, Sample, is_image_file
from ._files import annotation_lines, missing_files, require_images, with_tree
from ._registry import register_format

__all__ = ["IMAGELIST_TREE", "looks_like_imagelist", "read_imagelist"]

IMAGELIST_TREE = """\
ROOT/                        Stanford Cars as MMAL-Net ships it
  train.txt                  <path> <label> per line, e.g. "00001.jpg 14" (path under cars_train/)
  test.txt                   e.g. "00001.jpg 181" (path under cars_test/)
  val.txt                    optional, the same form
  classes.txt                optional: <label> <class name> per line
  cars_train/00001.jpg ...
  cars_test/00001.jpg ...
ROOT/                        FGVC-Aircraft as MMAL-Net ships it (ROOT may also be data/ itself)
  data/
    train.txt                e.g. "1025794.jpg 1" (path under data/images/)
    test.txt
    images/1025794.jpg ...
A path may also be relative to the lists' folder or ROOT, e.g. "cars_train/00001.jpg"."""
__doc__ = with_tree(__doc__, IMAGELIST_TREE)

_SPLITS = ("train", "val", "test")  # val.txt is optional
_PROBE = 20  # listed images tried per candidate folder when choosing the one a list's paths start from
_FORM = "'<relative path> <integer label>'"
_FIX = ("point to the folder that holds train.txt and test.txt (or the one whose data/ holds them), "
        "next to the image folders")


@dataclass(frozen=True)
class _Entry:
    list_file: Path
    line_no: int
    relative: str  # the path as written, with forward slashes
    label: str  # as written


Located = dict[str, list[tuple[_Entry, Path]]]  # split -> (entry, image path) in list order


def looks_like_imagelist(root: Path) -> bool:
    """True when ROOT or ROOT/data holds train.txt and test.txt whose first line is '<image path> <int>'."""
    root = Path(root)
    return any(all(_starts_like_a_list(folder / f"{s}.txt") for s in ("train", "test"))
               for folder in (root, root / "data"))


def read_imagelist(root: str | Path) -> DatasetIndex:
    """Read the train/val/test lists and check that every listed image exists (no decoding)."""
    root = Path(root)
    base = next((folder for folder in (root, root / "data") if (folder / "train.txt").is_file()), None)
    if base is None:
        raise DatasetLayoutError(root, f"no train.txt in {root} or {root / 'data'}", IMAGELIST_TREE, _FIX)
    problems: list[Problem] = []
    entries = {split: _read_list(base / f"{split}.txt", problems)
               for split in _SPLITS if (base / f"{split}.txt").is_file()}
    if not entries["train"]:
        raise DatasetLayoutError(root, f"{_name(root, base / 'train.txt')} lists no images as {_FORM}",
                                 IMAGELIST_TREE, _FIX)

    located = {split: _locate(root, base, split, rows, problems) for split, rows in entries.items()}
    located, numbers = _drop_respelled_labels(_drop_duplicates(root, located, problems), problems)

    train_ids = list(dict.fromkeys(entry.label for entry, _ in located["train"]))
    classes = ClassTable.from_ids(train_ids, _class_names(base, train_ids, problems))
    problems += _numbering_notes([base / f"{split}.txt" for split in entries], classes, numbers)

    samples = []
    for split, rows in located.items():
        unknown: dict[str, list[_Entry]] = defaultdict(list)
        for entry, path in rows:
            if entry.label not in classes:
                unknown[entry.label].append(entry)
                continue
            samples.append(Sample(path, classes.index_of(entry.label), split, _name(root, path)))
        for label, uses in unknown.items():
            lines = ", ".join(str(e.line_no) for e in uses[:10]) + (" ..." if len(uses) > 10 else "")
            problems.append(Problem(
                "unknown-class", uses[0].list_file,
                f"line {uses[0].line_no}: label {label} is not in train.txt, so no model trained here can "
                f"predict it; {len(uses)} line(s) skipped: {lines}"))
    return DatasetIndex(root, "imagelist", classes, samples, problems)


def _parse(line: str) -> tuple[str, str] | None:
    """(path, label) of a '<path> <label>' line; None when it is not one (labels are ASCII digits)."""
    fields = line.split()
    if len(fields) != 2 or not (fields[1].isascii() and fields[1].isdigit()):
        return None
    return fields[0].replace("\\", "/"), fields[1]


def _starts_like_a_list(path: Path) -> bool:
    """The first non-blank line (of the first 50) is '<image path> <int>'."""
    if not path.is_file():
        return False
    try:
        with path.open(encoding="utf-8-sig", errors="replace") as f:
            for _, line in zip(range(50), f, strict=False):
                if line.strip():
                    parsed = _parse(line.strip())
                    return parsed is not None and is_image_file(Path(parsed[0]))
    except OSError:
        return False
    return False


def _read_list(path: Path, problems: list[Problem]) -> list[_Entry]:
    entries = []
    for line_no, line in annotation_lines(path.parent, path.name, IMAGELIST_TREE, _FIX):
        parsed = _parse(line)
        if parsed is None:
            problems.append(Problem("bad-line", path, f"line {line_no}: expected {_FORM}, got {line!r}; skipped"))
        else:
            entries.append(_Entry(path, line_no, *parsed))
    return entries


def _locate(root: Path, base: Path, split: str, entries: list[_Entry],
            problems: list[Problem]) -> list[tuple[_Entry, Path]]:
    """Pair each entry with its image path; a missing image becomes an error problem (or, when none
    of the list's images exist, a layout error: the folder is wrong, not the images)."""
    if not entries:
        return []
    folder = _image_folder(root, base, split, [e.relative for e in entries[:_PROBE]])
    located = [(entry, folder / entry.relative) for entry in entries]
    missing = set(missing_files(path for _, path in located))
    if len(missing) == len(located):
        where = "ROOT" if folder == root else f"{_name(root, folder)}/"
        require_images([Sample(path, None, split, "") for _, path in located], root, IMAGELIST_TREE,
                       f"image(s) listed in {entries[0].list_file.name} (looked in {where})", _FIX)
    for entry, path in located:
        if path in missing:
            problems.append(Problem("missing-image", entry.list_file,
                                    f"line {entry.line_no}: image {_name(root, path)} does not exist"))
    return [(entry, path) for entry, path in located if path not in missing]


def _image_folder(root: Path, base: Path, split: str, probe: list[str]) -> Path:
    """The candidate folder holding the most of ``probe`` (earlier candidates win ties); with no hit
    at all, the MMAL-Net folder that exists, so the missing-image message points where it looked."""
    mmal = [base / f"cars_{split}", base / "images"]
    candidates = list(dict.fromkeys((base, root, *mmal)))
    hits = [sum((folder / relative).is_file() for relative in probe) for folder in candidates]
    if max(hits) > 0:
        return candidates[hits.index(max(hits))]
    return next((folder for folder in mmal if folder.is_dir()), base)


def _keep_first(located: Located, key: Callable[[_Entry, Path], object],
                keeps: Callable[[_Entry, _Entry], bool],
                problem: Callable[[_Entry, Path, _Entry], Problem],
                problems: list[Problem]) -> tuple[Located, dict[object, _Entry]]:
    """Walk every listing (train first); the first entry of each ``key`` decides, a later one is kept
    when ``keeps(first, later)`` and otherwise reported as ``problem(later, path, first)`` and skipped."""
    first: dict[object, _Entry] = {}
    kept: Located = {}
    for split, rows in located.items():
        kept[split] = []
        for entry, path in rows:
            earlier = first.setdefault(key(entry, path), entry)
            if keeps(earlier, entry):
                kept[split].append((entry, path))
            else:
                problems.append(problem(entry, path, earlier))
    return kept, first


def _drop_duplicates(root: Path, located: Located, problems: list[Problem]) -> Located:
    """An image listed twice would count twice, or leak from train into test: keep the first listing."""
    return _keep_first(
        located, key=lambda entry, path: path, keeps=lambda earlier, entry: earlier is entry,
        problem=lambda entry, path, earlier: Problem(
            "duplicate-image", entry.list_file,
            f"line {entry.line_no}: image {_name(root, path)} is already listed on "
            f"{earlier.list_file.name} line {earlier.line_no}; skipped"),
        problems=problems)[0]


def _drop_respelled_labels(located: Located, problems: list[Problem]) -> tuple[Located, dict[int, str]]:
    """Keep one spelling per label number (the first seen, train first): ``01`` and ``1`` in one
    dataset would otherwise be two classes, or a test label that silently matches nothing."""
    kept, spelling = _keep_first(
        located, key=lambda entry, path: int(entry.label), keeps=lambda first, entry: first.label == entry.label,
        problem=lambda entry, path, first: Problem(
            "respelled-label", entry.list_file,
            f"line {entry.line_no}: label {entry.label} is the number written {first.label} on "
            f"{first.list_file.name} line {first.line_no}; write each label one way; skipped"),
        problems=problems)
    return kept, {number: entry.label for number, entry in spelling.items()}  # type: ignore[misc]


def _class_names(base: Path, ids: list[str], problems: list[Problem]) -> dict[str, str]:
    """Display names from an optional ``classes.txt`` of '<label> <name>' lines, matched by number."""
    path = base / "classes.txt"
    if not path.is_file():
        return {}
    by_number = {int(i): i for i in ids}
    names = {}
    for line_no, line in annotation_lines(base, path.name, IMAGELIST_TREE, _FIX):
        label, name = (line.split(maxsplit=1) + [""])[:2]
        if not (label.isascii() and label.isdigit()) or not name:
            problems.append(Problem("bad-line", path, f"line {line_no}: expected '<label> <class name>', "
                                                      f"got {line!r}; skipped", "warning"))
        elif int(label) in by_number:
            names[by_number[int(label)]] = name
    return names


def _numbering_notes(lists: list[Path], classes: ClassTable, numbers: dict[int, str]) -> list[Problem]:
    """State the label base found (0 or 1), so a person can check it against the source of the lists,
    and warn of gaps in the train labels: indices follow the labels present, not the numbers."""
    lowest = min(numbers)
    base = {0: "0-based", 1: "1-based"}.get(lowest, f"numbered from {lowest}")
    names = " and ".join(path.name for path in lists)
    notes = [Problem("label-numbering", lists[0], f"labels in {names} are {base}: class {classes.ids[0]} is index 0",
                     "info")]
    train_numbers = sorted(int(i) for i in classes.ids)
    gaps = sorted(set(range(train_numbers[0], train_numbers[-1] + 1)) - set(train_numbers))
    if gaps:
        shown = ", ".join(str(g) for g in gaps[:10]) + (" ..." if len(gaps) > 10 else "")
        notes.append(Problem(
            "label-gap", lists[0],
            f"no train image has label(s) {shown} (between {train_numbers[0]} and {train_numbers[-1]}); "
            f"class indices follow the labels present, so from label {gaps[0] + 1} on a label's index is "
            f"not label - {train_numbers[0]}", "warning"))
    return notes


def _name(root: Path, path: Path) -> str:
    """A path relative to ROOT (as messages and image IDs show it); absolute when a list points outside."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


register_format("imagelist", reader=read_imagelist, detector=looks_like_imagelist, tree=IMAGELIST_TREE,
                priority=40)
