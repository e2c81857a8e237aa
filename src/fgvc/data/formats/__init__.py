"""Dataset formats: a registry of readers and detectors, and the two calls everything else uses.

``read_dataset(root, format=None, **options)`` reads a folder in a named or detected format;
``detect_format(root)`` names the format of a folder. Each format module registers itself with
``register_format`` (see ``_registry``); importing this package imports them all. Optional
dependencies stay inside the readers (Cars imports scipy only when it reads), so a missing one
never stands in the way of another format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..index import DataFolderNotFoundError, DatasetIndex, DatasetLayoutError
from . import aircraft, cars, competition, cub, imagefolder, imagelist  # noqa: F401  (each registers itself)
from ._registry import (
    FormatSpec,
    ReaderOption,
    check_reader_options,
    get_format,
    reader_options,
    register_format,
    registered_formats,
)

__all__ = [
    "FormatSpec",
    "ReaderOption",
    "check_reader_options",
    "detect_format",
    "format_names",
    "get_format",
    "read_dataset",
    "reader_options",
    "register_format",
    "registered_formats",
]


def format_names() -> list[str]:
    """Names of the registered formats, in detection order."""
    return [spec.name for spec in registered_formats()]


def _require_folder(root: Path) -> None:
    if not root.is_dir():
        raise DataFolderNotFoundError(root)


def detect_format(root: str | Path) -> str:
    """The first registered format (in detection order) whose detector recognises ``root``."""
    root = Path(root)
    _require_folder(root)
    for spec in registered_formats():
        if spec.detector(root):
            return spec.name
    trees = "\n\n".join(f"{spec.name}:\n{spec.tree}" for spec in registered_formats())
    raise DatasetLayoutError(root, "no known dataset layout recognised", trees,
                             "arrange the images as one of the layouts above, or name the format "
                             "(data.format in the config, --format for fgvc data check)")


def read_dataset(root: str | Path, format: str | None = None, **options: Any) -> DatasetIndex:
    """Read ``root`` in the given format (auto-detected when None or "auto").

    ``options`` are the reader's keywords (``data.options`` of a config); one the format does not
    take, or a value it refuses, is a ``ConfigError`` naming ``data.options.<key>``.
    """
    root = Path(root)
    detected = format is None or format == "auto"
    if not detected:
        check_reader_options(format, options)  # an unknown format or option fails before any disk access
    _require_folder(root)
    if detected:
        format = detect_format(root)
        check_reader_options(format, options, detected_in=root)
    return get_format(format).reader(root, **options)
