"""`fgvc server ...`: argument parsing only; FastAPI, Uvicorn and SQLAlchemy are imported when a command runs.

::

    fgvc server init COMP_DIR --labels test_labels.csv [--classes F] [--public-fraction 0.3] [--daily-limit 5]
                     [--deadline 2027-01-15T23:59Z] [--title T] [--leaderboard best|last] [--seed N] [--db URL]
    fgvc server team add|token COMP_DIR NAME       prints the team's (new) token, once
    fgvc server team list COMP_DIR
    fgvc server run COMP_DIR [--host 127.0.0.1] [--port 8000] [--db URL] [--auth token|open] [--teams-file F]
                    [--ssl-certfile F [--ssl-keyfile F]] [--trusted-proxy ADDR] [--header-timeout S] ...
    fgvc server set COMP_DIR [--deadline T|--no-deadline] [--daily-limit N] [--title T] [--leaderboard R]
    fgvc server export COMP_DIR [--format csv|json] [--out FILE] [--submissions]
    fgvc server rescore COMP_DIR [--labels FIXED.csv]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from ..errors import UserError
from ..web.extras import needs_extra
from ..web.netbind import HttpLimits
from .argtypes import fraction, non_negative_int, port, positive_int, positive_seconds

__all__ = ["add_server_commands"]


def _address_or_network(text: str) -> str:
    """An IP address or network (10.0.0.0/8), as Uvicorn's forwarded_allow_ips takes them."""
    import ipaddress

    try:
        ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address or network (e.g. 127.0.0.1, "
                                         "10.0.0.0/8)") from None
    return text.strip()


def _needs_extra(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A missing server dependency is a one-line error naming the extra to install (the web layer's message)."""

    def run(args: argparse.Namespace) -> int:
        with needs_extra("server", "server"):
            return func(args)

    return run


def _deadline(text: str):
    from ..errors import ConfigError
    from ..server.competition import parse_deadline

    try:
        return parse_deadline(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(f"--deadline {text!r} ")) from None


# -- handlers -----------------------------------------------------------------------------------------
@_needs_extra
def _init(args: argparse.Namespace) -> int:
    from ..server import admin

    print(admin.init(args.comp_dir, args.labels, classes=args.classes, public_fraction=args.public_fraction,
                     daily_limit=args.daily_limit, deadline=args.deadline, title=args.title or "",
                     leaderboard=args.leaderboard, seed=args.seed, db_url=args.db))
    _warn_ignored_columns(args.labels)
    _warn_if_past(args.deadline)
    return 0


def _warn(message: str) -> None:
    print(f"fgvc: warning: {message}", file=sys.stderr)


def _warn_ignored_columns(labels: Path) -> None:
    """Say which columns of a labels file the server does not read (a Kaggle ``Usage`` split, names)."""
    from ..data.labels_csv import ignored_columns

    if ignored := ignored_columns(labels):
        _warn(f"{labels}: column(s) {', '.join(map(repr, ignored))} ignored; the server reads only file and "
              "class_id (the public/private split is drawn with --public-fraction and --seed)")


def _warn_if_past(deadline: datetime | None) -> None:
    """A deadline in the past closes the competition at once: allowed (that is how one closes it early), said."""
    from ..server.competition import format_time, utc_now

    if deadline is not None and deadline <= utc_now():
        _warn(f"the deadline {format_time(deadline)} is in the past: the competition is closed now (submissions "
              "are refused and the leaderboard shows the final, private scores)")


@_needs_extra
def _team_add(args: argparse.Namespace) -> int:
    from ..server import admin

    print(admin.add_team(args.comp_dir, args.name, args.db))
    return 0


@_needs_extra
def _team_token(args: argparse.Namespace) -> int:
    from ..server import admin

    print(admin.new_team_token(args.comp_dir, args.name, args.db))
    return 0


@_needs_extra
def _team_list(args: argparse.Namespace) -> int:
    from ..server import admin

    print(admin.list_teams(args.comp_dir, args.db))
    return 0


@_needs_extra
def _run(args: argparse.Namespace) -> int:
    from ..server.runner import serve

    limits = HttpLimits(header_timeout=args.header_timeout, body_timeout=args.body_timeout,
                        keep_alive_timeout=args.keep_alive_timeout, max_connections=args.max_connections)
    serve(args.comp_dir, host=args.host, port=args.port, db_url=args.db, auth=args.auth, teams_file=args.teams_file,
          max_body_bytes=args.max_body_mb * 1024 * 1024, limits=limits, ssl_certfile=args.ssl_certfile,
          ssl_keyfile=args.ssl_keyfile, trusted_proxies=tuple(args.trusted_proxy),
          new_teams_per_address=args.new_teams_per_address)
    return 0


@_needs_extra
def _set(args: argparse.Namespace) -> int:
    from ..server import admin

    changes = {k: v for k, v in (("title", args.title), ("daily_limit", args.daily_limit),
                                 ("leaderboard", args.leaderboard), ("deadline", args.deadline)) if v is not None}
    if args.no_deadline:
        changes["deadline"] = None
    if not changes:
        raise UserError("nothing to change: pass --deadline, --no-deadline, --daily-limit, --title or --leaderboard")
    print(admin.set_settings(args.comp_dir, **changes))
    _warn_if_past(args.deadline)
    return 0


@_needs_extra
def _export(args: argparse.Namespace) -> int:
    from ..server import admin

    print(admin.export(args.comp_dir, fmt=args.format, out=args.out, submissions=args.submissions, db_url=args.db))
    return 0


@_needs_extra
def _rescore(args: argparse.Namespace) -> int:
    from ..server import admin

    print(admin.rescore(args.comp_dir, labels=args.labels, db_url=args.db))
    if args.labels is not None:
        _warn_ignored_columns(args.labels)
    return 0


# -- parsers ------------------------------------------------------------------------------------------
def _comp_dir(parser: argparse.ArgumentParser, *, db: bool = True) -> None:
    parser.add_argument("comp_dir", type=Path, metavar="COMP_DIR", help="the competition's folder")
    if db:
        parser.add_argument("--db", default=None, metavar="URL",
                            help="database URL (default: the one given at init, else SQLite in COMP_DIR)")


def add_server_commands(commands: argparse._SubParsersAction) -> None:
    """Add `fgvc server` and its sub-commands to the main parser's sub-commands."""
    server = commands.add_parser("server", help="run a competition: scoring server, leaderboard, teams")
    sub = server.add_subparsers(dest="server_command", required=True)

    init = sub.add_parser("init", help="create a competition from the test labels")
    init.add_argument("comp_dir", type=Path, metavar="COMP_DIR", help="new folder for the competition")
    init.add_argument("--labels", type=Path, required=True, help="test labels CSV: file,class_id")
    init.add_argument("--classes", type=Path, default=None,
                      help="class list: a run's classes.json or class_labels.txt (default: the labels' classes)")
    init.add_argument("--public-fraction", type=fraction, default=0.3,
                      help="share of test images scored publicly before the deadline (default 0.3)")
    init.add_argument("--daily-limit", type=non_negative_int, default=5,
                      help="submissions per team per UTC day (0: no limit; default %(default)s)")
    init.add_argument("--deadline", type=_deadline, default=None, help="e.g. 2027-01-15T23:59Z")
    init.add_argument("--title", default=None, help="shown on the leaderboard (default: the folder's name)")
    init.add_argument("--leaderboard", choices=["best", "last"], default="best",
                      help="which submission of a team counts: its best public score or its latest "
                           "(default %(default)s)")
    init.add_argument("--seed", type=non_negative_int, default=None,
                      help="seed of the public/private split (default: random)")
    init.add_argument("--db", default=None, metavar="URL",
                      help="e.g. postgresql+psycopg://USER@HOST/DB (default: SQLite in COMP_DIR)")
    init.set_defaults(func=_init)

    team = sub.add_parser("team", help="add teams, issue tokens, list teams")
    team_sub = team.add_subparsers(dest="team_command", required=True)
    add = team_sub.add_parser("add", help="add a team and print its token (shown once)")
    _comp_dir(add)
    add.add_argument("name", metavar="NAME")
    add.set_defaults(func=_team_add)
    token = team_sub.add_parser("token", help="give a team a new token (the old one stops working)")
    _comp_dir(token)
    token.add_argument("name", metavar="NAME")
    token.set_defaults(func=_team_token)
    listing = team_sub.add_parser("list", help="teams, their submission counts and whether they have a token")
    _comp_dir(listing)
    listing.set_defaults(func=_team_list)

    run = sub.add_parser("run", help="serve the competition (leaderboard at /, submissions at /api/submissions)")
    _comp_dir(run)
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    run.add_argument("--port", type=port, default=8000, help="port to listen on (default %(default)s)")
    run.add_argument("--auth", choices=["token", "open"], default="token",
                     help="token: teams send their token; open: teams name themselves by 'groupname' (the "
                          "course's original protocol)")
    run.add_argument("--teams-file", type=Path, default=None,
                     help="with --auth open: accept only these team names (one per line); without it, a new name "
                          "makes a new team")
    run.add_argument("--new-teams-per-address", type=non_negative_int, default=3, metavar="N",
                     help="with --auth open and no --teams-file: new teams one client address may create per UTC day "
                          "(0: no limit; default %(default)s)")
    run.add_argument("--max-body-mb", type=non_negative_int, default=16,
                     help="largest accepted request body (MB; default %(default)s)")
    tls = run.add_argument_group("TLS and reverse proxies (README: 'Running on a network')")
    tls.add_argument("--ssl-certfile", default=None, help="serve HTTPS with this PEM certificate (chain)")
    tls.add_argument("--ssl-keyfile", default=None, help="its private key, if not in --ssl-certfile")
    tls.add_argument("--trusted-proxy", type=_address_or_network, action="append", default=[], metavar="ADDR",
                     help="believe X-Forwarded-For/-Proto only from this address or network, the reverse proxy's "
                          "(repeatable; default: from nobody)")
    limits = run.add_argument_group("connection limits (a client slower than these is disconnected)")
    defaults = HttpLimits()
    limits.add_argument("--header-timeout", type=positive_seconds, default=defaults.header_timeout, metavar="S",
                        help="seconds for a request's headers to arrive (default %(default)g)")
    limits.add_argument("--body-timeout", type=positive_seconds, default=defaults.body_timeout, metavar="S",
                        help="seconds for a request's body to arrive after its headers (default %(default)g)")
    limits.add_argument("--keep-alive-timeout", type=positive_seconds, default=defaults.keep_alive_timeout,
                        metavar="S", help="seconds an idle connection is kept between requests (default %(default)g)")
    limits.add_argument("--max-connections", type=positive_int, default=defaults.max_connections, metavar="N",
                        help="open connections beyond which new requests get 503 (default %(default)d)")
    run.set_defaults(func=_run)

    settings = sub.add_parser("set", help="change the deadline, daily limit, title or leaderboard rule")
    _comp_dir(settings, db=False)
    deadline = settings.add_mutually_exclusive_group()
    deadline.add_argument("--deadline", type=_deadline, default=None)
    deadline.add_argument("--no-deadline", action="store_true")
    settings.add_argument("--daily-limit", type=non_negative_int, default=None)
    settings.add_argument("--title", default=None)
    settings.add_argument("--leaderboard", choices=["best", "last"], default=None)
    settings.set_defaults(func=_set)

    export = sub.add_parser("export", help="the leaderboard with private scores, or every submission")
    _comp_dir(export)
    export.add_argument("--format", choices=["csv", "json"], default="csv")
    export.add_argument("--out", type=Path, default=None, help="file to write (default: print)")
    export.add_argument("--submissions", action="store_true", help="every submission instead of the leaderboard")
    export.set_defaults(func=_export)

    rescore = sub.add_parser("rescore", help="score every stored submission again (e.g. after a labels fix)")
    _comp_dir(rescore)
    rescore.add_argument("--labels", type=Path, default=None, help="fixed labels CSV to install first")
    rescore.set_defaults(func=_rescore)
