"""The library logs; the command line decides what the user sees: the run's lines on stdout, warnings on stderr,
each the message alone (what `print` showed), and nothing of it left behind once the command returns."""

import logging

from fgvc.cli.console import console_logging


def test_a_command_shows_engine_lines_on_stdout_and_warnings_on_stderr_then_leaves_logging_as_it_was(capsys):
    handlers = list(logging.getLogger("fgvc").handlers)
    with console_logging():
        logging.getLogger("fgvc.engine.trainer").info("epoch 1/1: train loss 0.500")
        logging.getLogger("fgvc.data.dataset").warning("skipped unreadable image a.jpg: truncated")
        logging.getLogger("fgvc.server.service").info("a service's own detail")  # not a command's output
    logging.getLogger("fgvc.engine.trainer").info("from a script, with logging off")
    captured = capsys.readouterr()
    assert captured.out == "epoch 1/1: train loss 0.500\n"
    assert captured.err == "skipped unreadable image a.jpg: truncated\n"
    assert logging.getLogger("fgvc").handlers == handlers
    assert logging.getLogger("fgvc.engine").level == logging.NOTSET
