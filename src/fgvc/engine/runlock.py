"""One fgvc process per run directory: an OS lock on ``RUN/.lock`` held for the run's life.

Without it, two ``fgvc train --out RUN`` started together both succeed and overwrite each other's
checkpoints and metrics. Meant to be taken first thing by every command that writes into a run
directory (``fgvc train``, including ``--resume``), before anything is read or written there and
before :func:`fgvc.fileio.remove_stale_temporaries` clears the folder, and held until the command
exits::

    with RunLock(run_dir):
        remove_stale_temporaries(run_dir)
        Trainer(config, run_dir, ...).fit()

The lock is ``flock(LOCK_EX | LOCK_NB)``: the kernel drops it when the holding process dies, even by
SIGKILL, so a lock file left behind never blocks a later run. Take it in the main process only;
forked children (DataLoader workers) share it, so it is released when the last of them exits.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import shlex
import shutil
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from ..errors import UserError, output_error

__all__ = ["RunLock", "LOCK_NAME", "discard_failed_start"]

LOCK_NAME = ".lock"
_COMMAND_SHOWN = 120  # characters of the holder's command line in the message


def _command_line() -> str:
    """This process's command as a user typed it: ``fgvc train ...`` rather than a script path."""
    argv = list(sys.argv) or ["python"]
    head = Path(argv[0])
    if head.name == "__main__.py":  # python -m fgvc
        argv[0] = f"python -m {head.parent.name}"
        return " ".join([argv[0], shlex.join(argv[1:])]).strip()
    argv[0] = head.name
    return shlex.join(argv)


class RunLock:
    """Exclusive, non-blocking lock of ``run_dir`` for this process (a context manager).

    Entering creates the folder if needed, takes the lock, and writes the holder's pid, host,
    command line and start time into ``run_dir/.lock`` (one JSON line). If another live process
    holds it, raises :class:`~fgvc.errors.UserError` naming that process. Not re-entrant: a second
    ``RunLock`` on the same folder in the same process fails like one in another process.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            raise output_error(self.path, e, "create the run lock") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_holder(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise UserError(
                    f"{self.run_dir} is in use by another fgvc process ({_describe(holder)}); wait for it to "
                    "finish or pick another --out"
                ) from None
            raise output_error(self.path, e, "lock") from e
        try:
            _write_holder(fd)
        except OSError as e:
            os.close(fd)  # closing the descriptor releases the lock
            raise output_error(self.path, e) from e
        self._fd = fd
        return self

    def release(self) -> None:
        """Release the lock (idempotent). Its contents are cleared first, while still locked, so a
        later holder's details are never wiped by this one."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # drops the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _write_holder(fd: int) -> None:
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": _command_line(),
        "since": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _read_holder(fd: int) -> dict[str, object]:
    """What the holder wrote; empty when it has not written yet (it took the lock an instant ago)."""
    try:
        raw = os.pread(fd, 64 * 1024, 0)
        record = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _describe(holder: dict[str, object]) -> str:
    if not holder.get("pid"):
        return "it started just now and has not written its details yet"
    parts = [f"pid {holder['pid']}"]
    host = holder.get("host")
    if host and host != socket.gethostname():
        parts[0] += f" on {host}"
    command = str(holder.get("command") or "")
    if command:
        if len(command) > _COMMAND_SHOWN:
            command = command[: _COMMAND_SHOWN - 3] + "..."
        parts.append(f"`{command}`")
    since = _since(str(holder.get("since") or ""))
    if since:
        parts.append(f"since {since}")
    return ", ".join(parts)


def _since(stamp: str) -> str:
    try:
        when = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return ""
    local = when.astimezone() if when.tzinfo else when
    today = dt.datetime.now().astimezone().date() if when.tzinfo else dt.date.today()
    return local.strftime("%H:%M:%S") if local.date() == today else local.strftime("%Y-%m-%d %H:%M:%S")


def discard_failed_start(run_dir: str | os.PathLike, first_checkpoint: str = "last.pt"):
    """A context manager for a new run's start: when it fails (an exception, Ctrl-C) before
    ``first_checkpoint`` exists, what it wrote into ``run_dir`` is removed again — the whole folder
    when it did not exist before this call — so a retry into the same ``--out`` starts clean instead of
    on a ``split.json`` carved for another config. Call it before :class:`RunLock` creates the folder
    and enter it inside the lock, which keeps every other fgvc process out while it removes.
    A kill (SIGKILL) runs no cleanup: the saved split is then checked at the retry
    (:func:`fgvc.data.split.load_saved_split`)."""
    run_dir = Path(run_dir)
    before = set(os.listdir(run_dir)) if run_dir.is_dir() else None
    return _discarded_on_failure(run_dir, before, first_checkpoint)


@contextlib.contextmanager
def _discarded_on_failure(run_dir: Path, before: set[str] | None, first_checkpoint: str) -> Iterator[None]:
    try:
        yield
    except (Exception, KeyboardInterrupt):
        if not (run_dir / first_checkpoint).exists():
            _remove_new_entries(run_dir, before)
        raise


def _remove_new_entries(run_dir: Path, before: set[str] | None) -> None:
    """Everything in ``run_dir`` that is not in ``before``; the folder itself when ``before`` is None."""
    if not run_dir.is_dir():
        return
    if before is None:
        shutil.rmtree(run_dir, ignore_errors=True)
        return
    for name in set(os.listdir(run_dir)) - before:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
