"""One error type for every expected failure: the CLI prints its message as one line, exit 2.

Anything that is not an :class:`FgvcError` is a bug in fgvc and is shown as an internal error with
its traceback. No subclass also derives from a builtin: ``except ValueError`` (or ``OSError``) around a call
catches the library's or Python's own failure, never one of fgvc's messages; catch the fgvc class you mean.
"""

from __future__ import annotations

import errno
import os

__all__ = [
    "FgvcError",
    "UserError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "OutputError",
    "output_error",
]


class FgvcError(Exception):
    """An expected failure; the message names the file or key, what was found and the fix."""


class UserError(FgvcError):
    """A problem the user can fix that belongs to no narrower kind."""


class ConfigError(FgvcError):
    """A preset, key, value or command-line number that cannot be used."""


class DataError(FgvcError):
    """A dataset folder, label file or class table that cannot be used as it is."""


class CheckpointError(FgvcError):
    """A checkpoint that is missing, damaged, or does not fit the model or data."""


class OutputError(FgvcError):
    """fgvc could not write one of its own files (no permission, disk full, a file in the way)."""

    errno: int | None = None  # the failed call's, where one is known (output_error sets it)


def output_error(path: str | os.PathLike, e: OSError, what: str = "write") -> OutputError:
    """Turn an ``OSError`` from one of our own writes into a one-line error with the path and the fix."""
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "choose a folder you can write to (e.g. --out under your home folder) or fix its permissions"
        reason = "permission denied" if e.errno != errno.EROFS else "read-only file system"
    elif e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space there or write to another disk"
        reason = "no space left on the device"
    elif e.errno == errno.EEXIST or e.errno == errno.ENOTDIR:
        fix = "a file stands where fgvc needs a folder; pass another path or move the file"
        reason = "a file is in the way"
    elif e.errno == errno.EISDIR:
        fix = "a folder stands where fgvc writes a file; pass a file path"
        reason = "is a folder"
    else:
        fix = "check the path and the disk"
        reason = e.strerror or type(e).__name__
    error = OutputError(f"cannot {what} {os.fspath(path)}: {reason}; {fix}")
    error.errno = e.errno
    return error
