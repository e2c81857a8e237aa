"""argparse ``choices`` read from the library's own constant, so a command's list never drifts from what the
library accepts; the constant's module is imported on first use (checking a value, ``--help``), so building the
parser imports no torch."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["LibraryChoices", "add_choice_argument", "TTA_SCHEMES", "EXPORT_FORMATS"]


class LibraryChoices(Sequence[str]):
    """The values of ``module.name`` (a tuple of strings, or a function returning one: read on every use, so a
    registry-backed list includes what was registered later), looked up when argparse first needs them."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def _values(self) -> tuple[str, ...]:
        values = getattr(importlib.import_module(self.module), self.name)
        return tuple(values() if callable(values) else values)

    def __getitem__(self, index):  # type: ignore[override]
        return self._values()[index]

    def __len__(self) -> int:
        return len(self._values())

    def __iter__(self) -> Iterator[str]:
        return iter(self._values())

    def __contains__(self, value: object) -> bool:
        return value in self._values()


TTA_SCHEMES = LibraryChoices("fgvc.engine.ensemble", "TTA_SCHEMES")
EXPORT_FORMATS = LibraryChoices("fgvc.export.formats", "FORMATS")


def add_choice_argument(parser: argparse.ArgumentParser, flag: str, choices: LibraryChoices,
                        **kwargs: Any) -> argparse.Action:
    """``parser.add_argument(flag, choices=choices, **kwargs)``, with the choices set after the call: argparse's
    ``add_argument`` formats the metavar once as a check, which would read (import) them at parser build."""
    action = parser.add_argument(flag, **kwargs)
    action.choices = choices
    return action
