"""Atomic file writes: a crash or kill leaves either the old file or the new one, never half of one.

Every file fgvc writes (checkpoints, config.yaml, metrics.csv, report.html, submission.json, ...) goes
through :func:`atomic_open`: the bytes go to a temp file ``.<name>.<token>.tmp`` beside the target,
which is fsynced and renamed over the target. A kill between the two leaves the temp file behind;
:func:`remove_stale_temporaries` clears those when a run starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import FgvcError, output_error

__all__ = [
    "TEMP_NAME",
    "atomic_open",
    "atomic_write_text",
    "atomic_write_json",
    "remove_stale_temporaries",
]

# The token has the alphabet and length of ``tempfile.mkstemp``'s, which named the temp files of
# earlier versions, so their leftovers match too. One pattern serves the writer and the cleanup.
_TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
_TOKEN_LENGTH = 8
TEMP_NAME = re.compile(rf"^\.(?P<target>.+)\.(?P<token>[a-z0-9_]{{{_TOKEN_LENGTH}}})\.tmp$")
"""Names of fgvc's own temp files: ``.<target name>.<8 of [a-z0-9_]>.tmp``."""

# A plain ``open(path, "w")`` creates a file with 0o666 less the umask; the kernel applies the umask
# to the mode passed to ``os.open``, so the temp file gets exactly that without reading the umask
# (os.umask can only be read by changing it, which races with other threads creating files).
_NEW_FILE_MODE = 0o666
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _temp_name(target: str) -> str:
    name = f".{target}.{''.join(secrets.choice(_TOKEN_CHARS) for _ in range(_TOKEN_LENGTH))}.tmp"
    assert TEMP_NAME.match(name), name  # the writer and the cleanup must agree
    return name


def _create_temp(path: Path) -> tuple[int, Path]:
    """Create a new, empty temp file beside ``path`` (O_EXCL: never someone else's file)."""
    for _ in range(100):
        tmp = path.parent / _temp_name(path.name)
        try:
            return os.open(tmp, _CREATE_FLAGS, _NEW_FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temp file name beside {path}")  # 37**8 names: practically unreachable


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def _is_our_write_error(e: BaseException, tmp: Path) -> bool:
    """An OSError raised in the caller's block that came from writing the temp file.

    ``f.write`` raises it without a file name; an OSError that names another file (the caller read
    an input that is missing) is the caller's own and passes through unchanged, as does one that is
    already an fgvc error (e.g. an unreadable image)."""
    if not isinstance(e, OSError) or isinstance(e, FgvcError):
        return False
    return e.filename is None or os.fspath(e.filename) == os.fspath(tmp)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO[Any]]:
    """Write to a temp file beside ``path``; on success fsync it and rename it over ``path``.

    The new file gets the mode a plain ``open()`` gives a new file (0o666 less the umask), also when
    it replaces an existing file: a replaced file is a new file, as with any rename-based save.

    Any OSError of our own (creating the folder or the temp file, writing, fsync, rename) becomes an
    :class:`~fgvc.errors.OutputError` naming ``path``; on any failure the temp file is removed and
    the file already at ``path`` is left as it was. Exceptions of the caller's block that are not
    write errors pass through unchanged.
    """
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_open writes a whole new file; mode must be 'w' or 'wb', not {mode!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path)
    except OSError as e:
        raise output_error(path, e) from e
    try:
        f = os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""}))
    except BaseException:
        os.close(fd)
        _discard(tmp)
        raise
    try:
        try:
            yield f
        except OSError as e:
            if _is_our_write_error(e, tmp):
                raise output_error(path, e) from e
            raise
        try:
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(tmp, path)
        except OSError as e:
            raise output_error(path, e) from e
    except BaseException:
        with contextlib.suppress(OSError):
            f.close()  # after a failed flush this raises again, but it closes the descriptor
        _discard(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, data: Any, default: Callable[[Any], Any] | None = str) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, ensure_ascii=False, default=default) + "\n")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temp files that a killed writer left in ``folder`` (not in its sub-folders).

    Only names of :data:`TEMP_NAME` are touched, so a user's ``notes.tmp`` stays. Call it only while
    no other process writes to ``folder`` (i.e. holding its :class:`~fgvc.engine.runlock.RunLock`): a live
    writer's temp file looks just like a stale one. Returns the removed files, sorted.
    """
    folder = Path(folder)
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in entries:
        if TEMP_NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
            except OSError as e:
                raise output_error(entry.path, e, "remove the stale temporary file") from e
            removed.append(Path(entry.path))
    return sorted(removed)
