"""What the user sees of the library's log: the library logs (``logging``, the ``fgvc`` hierarchy) and prints
nothing; the command line shows the training's progress lines on stdout and every warning on stderr, the
message alone, as ``print`` would."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["console_logging"]

SHOWN = "fgvc.engine"  # whose INFO lines are the command's output (a run's epochs, its temperature, ...)


class _Console(logging.Handler):
    """INFO to stdout, WARNING and above to stderr. The stream is looked up per record, so a redirected
    ``sys.stdout`` is honoured, and nothing is caught: a reader that closed stdout early surfaces as the
    ``BrokenPipeError`` that :func:`fgvc.cli.main` turns into exit 141, as it did for ``print``."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
        stream.write(self.format(record) + "\n")


@contextmanager
def console_logging() -> Iterator[None]:
    """For one command: the ``fgvc`` loggers print to the console, and are left as they were afterwards (a
    program that calls the library next, in the same process, still decides for itself)."""
    root, shown = logging.getLogger("fgvc"), logging.getLogger(SHOWN)
    handler, level = _Console(), shown.level
    root.addHandler(handler)
    shown.setLevel(logging.INFO)
    try:
        yield
    finally:
        shown.setLevel(level)
        root.removeHandler(handler)
