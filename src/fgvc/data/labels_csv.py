"""The one reader of ``file,class_id`` label files (the competition's ``test_labels.csv``).

Both the competition reader and local scoring (``fgvc score``) read these files; one reader means
one set of rules: a header naming ``file`` and ``class_id`` (any case, in any column, other columns
ignored, :func:`ignored_columns` names them), class IDs kept as strings exactly as written (only
surrounding spaces trimmed), blank lines skipped, and a file labelled twice is an error naming both
lines, never a silent overwrite. Every bad row is reported in one error (the first few by line, then
how many more), so that one pass over the file fixes them all.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import DataError

__all__ = ["LabelsFileError", "ignored_columns", "read_labels_csv"]

_SHOWN = 10  # bad rows listed by line in one error; the rest are counted


class LabelsFileError(DataError):
    """A labels CSV that cannot be read as one label per file; the message names the file and line."""


def read_labels_csv(path: str | os.PathLike) -> dict[str, str]:
    """``{file name: class ID}`` from a ``file,class_id`` CSV."""
    path = Path(path)
    labels: dict[str, str] = {}
    first_line: dict[str, int] = {}
    columns: tuple[int, int] | None = None
    problems: list[str] = []  # the first _SHOWN bad rows
    bad_rows = 0
    for line, cells, row in _rows(path):
        if columns is None:
            columns = _header_columns(path, line, cells, row)
            continue
        name, class_id = (cells[columns[0]], cells[columns[1]]) if len(cells) > max(columns) else ("", "")
        if not name or not class_id:
            problem = f"line {line}: need a file name and a class ID, got {row!r}"
        elif name in labels:
            problem = (f"line {line}: file {name!r} is already labelled on line {first_line[name]}; "
                       "each test file needs exactly one label")
        else:
            labels[name], first_line[name] = class_id, line
            continue
        bad_rows += 1
        if len(problems) < _SHOWN:
            problems.append(problem)
    if bad_rows == 1:
        raise LabelsFileError(f"{path}: {problems[0]}")
    if bad_rows:
        more = f"\n  ... and {bad_rows - len(problems)} more" if bad_rows > len(problems) else ""
        raise LabelsFileError(f"{path}: {bad_rows} bad rows:\n  " + "\n  ".join(problems) + more)
    if columns is None:
        raise LabelsFileError(f"{path} is empty; expected a 'file,class_id' header and one row per test image")
    if not labels:
        raise LabelsFileError(f"{path} has a header but no label rows")
    return labels


def ignored_columns(path: str | os.PathLike) -> list[str]:
    """The header's columns other than ``file`` and ``class_id``, which :func:`read_labels_csv` ignores
    (e.g. a Kaggle solution file's ``Usage``): for a caller that should say so."""
    rows = _rows(Path(path))
    first = next(rows, None)
    rows.close()  # the header is all we need: close the file now
    return [] if first is None else [c for c in first[1] if c and c.casefold() not in ("file", "class_id")]


def _rows(path: Path) -> Iterator[tuple[int, list[str], list[str]]]:
    """(line number, stripped cells, raw cells) of each non-blank row; CRLF and a BOM are fine."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f)
            try:
                for row in reader:
                    cells = [c.strip() for c in row]
                    if any(cells):
                        yield reader.line_num, cells, row
            except csv.Error as e:
                raise LabelsFileError(f"{path}: line {reader.line_num}: malformed CSV: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LabelsFileError(f"cannot read labels {path}: {e}") from None


def _header_columns(path: Path, line: int, cells: list[str], row: list[str]) -> tuple[int, int]:
    header = [c.casefold() for c in cells]
    if "file" not in header or "class_id" not in header:
        raise LabelsFileError(
            f"{path}: line {line}: expected the header 'file,class_id', found {','.join(row)!r}; "
            "add that header as the first line"
        )
    return header.index("file"), header.index("class_id")
