"""`fgvc submit` and `fgvc score`: a submission file sent to a scoring server, or scored here."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .argtypes import non_negative_int


def _submit(args: argparse.Namespace) -> int:
    import os

    from ..competition.client import TOKEN_ENV, submit_submission

    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV) or None
    result = submit_submission(args.submission, args.url, retries=args.retries, token=token)
    for line in result.summary_lines():
        print(line)
    return 0


def _score(args: argparse.Namespace) -> int:
    from ..competition.submission import load_submission, read_labels_csv, score_submission

    submission = load_submission(args.submission, default_groupname="(no groupname)")  # scoring names no team
    labels = read_labels_csv(args.labels)
    class_ids = None
    if args.classes:
        from ..data.classes import ClassTable

        class_ids = ClassTable.load(args.classes).ids
    report = score_submission(submission, labels, class_ids=class_ids)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.to_text())
    return 0


def add_submit_command(commands: argparse._SubParsersAction) -> None:
    """`fgvc submit`."""
    submit = commands.add_parser("submit", help="POST a submission JSON to the scoring server")
    submit.add_argument("submission", type=Path)
    submit.add_argument("--url", required=True,
                        help="the server's submission address, e.g. http://HOST:8000/api/submissions")
    submit.add_argument("--retries", type=non_negative_int, default=3,
                        help="extra attempts after a connection error, timeout or HTTP 5xx (default %(default)s)")
    submit.add_argument("--token", default=None,
                        help="team token from `fgvc server team add` (default: the FGVC_TOKEN environment variable)")
    submit.set_defaults(func=_submit)


def add_score_command(commands: argparse._SubParsersAction) -> None:
    """`fgvc score`."""
    score = commands.add_parser("score", help="score a submission locally against a labels CSV")
    score.add_argument("submission", type=Path)
    score.add_argument("--labels", type=Path, required=True, help="CSV with file,class_id")
    score.add_argument("--classes", type=Path, default=None, help="classes.json of the run (all known IDs)")
    score.add_argument("--json", action="store_true")
    score.set_defaults(func=_score)
