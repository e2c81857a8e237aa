"""Format readers and auto-detection. Each reader: ``read_<format>(root, **options) -> DatasetIndex``."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..index import DatasetIndex, DatasetLayoutError

__all__ = ["FORMATS", "detect_format", "read_dataset", "format_parts"]

# Detection order matters: annotation-driven formats first, the generic class-folder layout last.
# Modules are imported on use, so one format's optional dependency (scipy for Cars) never
# stands in the way of another.
FORMATS: tuple[str, ...] = ("cub", "aircraft", "cars", "competition", "imagefolder")


def format_parts(name: str) -> tuple[Callable[..., DatasetIndex], Callable[[Path], bool], str]:
    """(reader, detector, expected tree) of a format module ``fgvc.data.formats.<name>``."""
    module = importlib.import_module(f"{__name__}.{name}")
    return (getattr(module, f"read_{name}"), getattr(module, f"looks_like_{name}"),
            getattr(module, f"{name.upper()}_TREE"))


def _all_trees() -> str:
    return "\n\n".join(f"{name}:\n{format_parts(name)[2]}" for name in FORMATS)


def detect_format(root: str | Path) -> str:
    root = Path(root)
    if not root.is_dir():
        raise DatasetLayoutError(root, "data folder not found", _all_trees(), "check the path passed as --data")
    for name in FORMATS:
        if format_parts(name)[1](root):
            return name
    raise DatasetLayoutError(root, "no known dataset layout recognised", _all_trees(),
                             "arrange the images as one of the layouts above, or pass --format")


def read_dataset(root: str | Path, format: str | None = None, **options: Any) -> DatasetIndex:
    """Read ``root`` in the given format (auto-detected when None)."""
    root = Path(root)
    if format is None or format == "auto":
        format = detect_format(root)
    if format not in FORMATS:
        close = difflib.get_close_matches(format, FORMATS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"unknown dataset format {format!r}; known: {', '.join(FORMATS)}.{hint}")
    return format_parts(format)[0](root, **options)
