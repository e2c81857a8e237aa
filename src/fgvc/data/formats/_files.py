"""Shared pieces for folder-walking readers: classify entries, parse small CSV/text annotation files."""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..index import DatasetLayoutError, Problem, Sample, is_hidden, is_image_file, list_dir

__all__ = ["annotation_lines", "image_files", "missing_files", "read_csv_rows", "read_boxes_csv",
           "require_images", "same_number_ids", "with_tree"]


def image_files(folder: Path, problems: list[Problem], ignored: Counter) -> list[Path]:
    """Image files directly inside ``folder`` (sorted); other files become warnings, hidden ones a count."""
    images = []
    for entry in list_dir(folder):
        if is_hidden(entry):
            ignored["hidden"] += 1
        elif entry.is_dir():
            problems.append(Problem("unexpected-folder", entry, "nested folder ignored", "warning"))
        elif is_image_file(entry):
            images.append(entry)
        else:
            problems.append(
                Problem("not-an-image", entry, f"'{entry.suffix or entry.name}' is not an image type; ignored",
                        "warning")
            )
    return images


def read_csv_rows(path: Path, columns: tuple[str, ...], root: Path, tree: str) -> list[dict[str, str]]:
    """Rows of a headed CSV; a missing column or short row names the file and line."""
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in columns if c not in header]
        if missing:
            raise DatasetLayoutError(
                root, f"{path.name} lacks column(s) {', '.join(missing)} (header: {','.join(header) or 'none'})",
                tree, f"start {path.name} with the header line '{','.join(columns)}'",
            )
        rows = []
        for line_no, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if not any(row.values()):
                continue
            if any(row.get(c, "") == "" for c in columns):
                raise DatasetLayoutError(
                    root, f"{path.name} line {line_no}: empty value in {row}", tree,
                    f"give every row all of: {','.join(columns)}",
                )
            rows.append(row)
    return rows


def read_boxes_csv(path: Path, root: Path, tree: str) -> dict[str, tuple[float, float, float, float]]:
    """``file,x,y,width,height`` (CUB convention) -> {relative path: (x0, y0, x1, y1) exclusive}."""
    boxes = {}
    for row in read_csv_rows(path, ("file", "x", "y", "width", "height"), root, tree):
        try:
            x, y, w, h = (float(row[k]) for k in ("x", "y", "width", "height"))
        except ValueError:
            raise DatasetLayoutError(root, f"{path.name}: non-numeric box in row {row}", tree) from None
        boxes[row["file"].replace("\\", "/")] = (x, y, x + w, y + h)
    return boxes


def missing_files(paths: Iterable[Path]) -> list[Path]:
    """The paths that are not files: one listing per folder instead of one stat call per image."""
    listings: dict[Path, set[str]] = {}
    missing = []
    for path in paths:
        names = listings.get(path.parent)
        if names is None:
            try:
                with os.scandir(path.parent) as entries:
                    names = {e.name for e in entries if e.is_file()}
            except OSError:
                names = set()
            listings[path.parent] = names
        # A listing miss may still exist on a case-insensitive filesystem; ask it before failing.
        if path.name not in names and not path.is_file():
            missing.append(path)
    return missing


def annotation_lines(base: Path, name: str, tree: str, fix: str) -> Iterator[tuple[int, str]]:
    """(line number, stripped line) of each non-blank line of ``base/name``: CRLF, a BOM and a
    missing final newline are all fine (REFERENCE T11); a missing or unreadable file is a layout error."""
    path = base / name
    if not path.is_file():
        raise DatasetLayoutError(base, f"missing {name} (expected at {path})", tree, fix)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetLayoutError(base, f"cannot read {name}: {e}", tree, fix) from None
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line:
            yield line_no, line


def require_images(samples: Iterable[Sample], base: Path, tree: str, what: str, fix: str) -> None:
    """Raise naming a few of the annotated images that do not exist (``what`` says where they are listed)."""
    missing = missing_files(s.path for s in samples)
    if missing:
        shown = ", ".join((p.relative_to(base) if p.is_relative_to(base) else p).as_posix() for p in missing[:5])
        raise DatasetLayoutError(base, f"{len(missing)} {what} do not exist, e.g. {shown}", tree, fix)


def same_number_ids(ids: Iterable[str]) -> dict[str, str]:
    """``{ID: earlier ID}`` for each ID that spells the same number as an earlier one (``4615`` after
    ``04615``), when all IDs are numbers: ClassTable orders such IDs by value and cannot hold both, so
    readers report the later one as a problem instead of failing the whole dataset."""
    ids = list(ids)
    if not ids or not all(i.isdecimal() for i in ids):
        return {}
    first: dict[int, str] = {}
    return {cid: first[int(cid)] for cid in ids if first.setdefault(int(cid), cid) != cid}


def with_tree(doc: str | None, tree: str) -> str:
    """A reader module's docstring followed by its expected tree (kept once, in the constant)."""
    indented = "\n".join("    " + line for line in tree.splitlines())
    return f"{(doc or '').rstrip()}\n\nExpected tree::\n\n{indented}\n"
