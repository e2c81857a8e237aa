"""The one reader of ``file,class_id`` label files (the competition's ``test_labels.csv``).

Both the competition reader and local scoring (``fgvc score``) read these files; one reader means
one set of rules: a header naming ``file`` and ``class_id`` (any case, in any column, other columns
ignored), class IDs kept as strings exactly as written (only surrounding spaces trimmed), blank
lines skipped, and a file labelled twice is an error naming both lines, never a silent overwrite.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

from ..errors import DataError

__all__ = ["LabelsFileError", "read_labels_csv"]


class LabelsFileError(DataError):
    """A labels CSV that cannot be read as one label per file; the message names the file and line."""


def read_labels_csv(path: str | os.PathLike) -> dict[str, str]:
    """``{file name: class ID}`` from a ``file,class_id`` CSV."""
    path = Path(path)
    labels: dict[str, str] = {}
    first_line: dict[str, int] = {}
    columns: tuple[int, int] | None = None
    for line, cells, row in _rows(path):
        if columns is None:
            columns = _header_columns(path, line, cells, row)
            continue
        if len(cells) <= max(columns) or not cells[columns[0]] or not cells[columns[1]]:
            raise LabelsFileError(f"{path}: line {line}: need a file name and a class ID, got {row!r}")
        name, class_id = cells[columns[0]], cells[columns[1]]
        if name in labels:
            raise LabelsFileError(
                f"{path}: line {line}: file {name!r} is already labelled on line {first_line[name]}; "
                "each test file needs exactly one label"
            )
        labels[name], first_line[name] = class_id, line
    if columns is None:
        raise LabelsFileError(f"{path} is empty; expected a 'file,class_id' header and one row per test image")
    if not labels:
        raise LabelsFileError(f"{path} has a header but no label rows")
    return labels


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
