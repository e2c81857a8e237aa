"""The ``fgvc`` command line: parse arguments, call the library, print. No logic lives here.

One module per command group, each adding its sub-commands to the parser: ``data`` (check, synth), ``train``,
``inference`` (evaluate, predict, export, serve), ``convert``, ``report`` (explain, report), ``competition`` (submit,
score), ``server`` (the scoring server's commands); ``argtypes`` parses numbers. :func:`main` turns an
:class:`~fgvc.errors.FgvcError` into one line and exit 2."""

from __future__ import annotations

import argparse
import errno
import sys
from collections.abc import Callable, Sequence

from ..errors import FgvcError, output_error
from .competition import add_score_command, add_submit_command
from .console import console_logging
from .convert import add_convert_command
from .data import add_data_commands
from .inference import add_evaluate_command, add_export_command, add_predict_command, add_serve_command
from .report import add_explain_command, add_report_command
from .server import add_server_commands
from .train import add_train_command

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fgvc", description="Fine-grained visual classification toolkit.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    add_data_commands(commands)
    add_train_command(commands)
    add_evaluate_command(commands)
    add_explain_command(commands)
    add_report_command(commands)
    add_predict_command(commands)
    add_submit_command(commands)
    add_score_command(commands)
    add_export_command(commands)
    add_convert_command(commands)
    add_serve_command(commands)
    add_server_commands(commands)  # argparse only: FastAPI/SQLAlchemy load when a server command runs
    return parser



# what a shell reports for a standard tool (`seq 1000000 | head -1`) killed by SIGPIPE: 128 + 13
EXIT_STDOUT_CLOSED = 141


def _reader_left() -> bool:
    """Whether stdout is a pipe or socket whose reader has gone (not some other broken pipe, e.g. a worker's)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll() on this platform, or stdout is not a file
        return False


def _exit_for_closed_stdout() -> int:
    """Quiet, as a standard tool whose reader stopped early: nothing on stderr, exit 141 (128 + SIGPIPE),
    the status `set -o pipefail` sees from coreutils. stdout now points at /dev/null so that Python's own
    flush at exit cannot raise again (the recipe in the Python docs, "Note on SIGPIPE")."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_STDOUT_CLOSED


_USER_FIXABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.ENOTDIR, errno.EEXIST}


def main(argv: Sequence[str] | None = None) -> int:
    """Expected failures (:class:`FgvcError`) are one line, exit 2; anything else is a bug in fgvc,
    shown with its traceback, exit 1. ``--debug`` shows every traceback. A reader that closed stdout
    early is neither: exit 141, quietly (:func:`_exit_for_closed_stdout`)."""
    args = build_parser().parse_args(argv)
    if args.command == "train":
        args.config_given = args.config is not None
        args.config = args.config or "demo"
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        with console_logging():
            status = func(args)
        sys.stdout.flush()  # a reader that left early (`| head -1`) shows here, not at interpreter exit
        return status
    except KeyboardInterrupt:
        print("fgvc: interrupted", file=sys.stderr)
        return 130
    except FgvcError as e:
        if args.debug:
            raise
        message = str(e)
        if "Original Traceback" in message:  # raised in a DataLoader worker: its last line is the story
            message = [line for line in message.splitlines() if line.strip()][-1].split(": ", 1)[-1]
        print(f"fgvc: error: {message}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001  not an expected failure: a bug, shown whole
        if isinstance(e, BrokenPipeError) and _reader_left():
            return _exit_for_closed_stdout()
        if isinstance(e, OSError) and e.errno in _USER_FIXABLE and e.filename and not args.debug:
            # a path the user gave that cannot be written (permission, full disk, a file in the way)
            print(f"fgvc: error: {output_error(e.filename, e, 'write to')}", file=sys.stderr)
            return 2
        if args.debug:
            raise
        import traceback

        traceback.print_exc()
        print("fgvc: internal error: this is a bug in fgvc, not something you did; please report it with the "
              "traceback above", file=sys.stderr)
        return 1
