"""The instructor's actions behind `fgvc server init|team|set|export|rescore`: local only, never HTTP.

Each function returns the text to print; :mod:`fgvc.cli.server` only parses arguments.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from ..errors import UserError
from ..fileio import atomic_write_text
from . import store
from .competition import (
    Competition,
    CompetitionCache,
    create_competition,
    format_time,
    replace_labels,
    update_settings,
    utc_now,
)
from .db import Database
from .runner import open_database
from .security import check_team_name, hash_token, new_token
from .service import CompetitionService

__all__ = ["add_team", "export", "init", "list_teams", "new_team_token", "rescore", "set_settings"]


def _describe(competition: Competition) -> str:
    private = len(competition.labels) - competition.public_count
    limit = f"{competition.daily_limit} per team per UTC day" if competition.daily_limit else "no daily limit"
    deadline = format_time(competition.deadline) if competition.deadline else "none"
    return (f"{len(competition.labels)} test images ({competition.public_count} public, {private} private), "
            f"{len(competition.class_ids)} classes, {limit}, deadline {deadline}, leaderboard counts each team's "
            f"{'best' if competition.leaderboard == 'best' else 'latest'} submission")


def init(comp_dir: Path, labels: Path, *, classes: Path | None, public_fraction: float, daily_limit: int,
         deadline: datetime | None, title: str, leaderboard: str, seed: int | None, db_url: str | None) -> str:
    if db_url is not None:  # check it before writing anything
        db = Database(db_url)
        try:
            db.ensure_schema()
            if db.claimed_by() is not None:
                raise UserError(f"the database {db.safe_url} already serves another competition; give each "
                                "competition its own database (or PostgreSQL schema)")
        finally:
            db.dispose()
    competition = create_competition(comp_dir, labels, classes_path=classes, public_fraction=public_fraction,
                                     daily_limit=daily_limit, deadline=deadline, title=title,
                                     leaderboard=leaderboard, seed=seed, db_url=db_url)
    db = open_database(CompetitionCache(comp_dir), None)
    db.dispose()
    return (f"created competition {competition.title!r} in {comp_dir}: {_describe(competition)}; database "
            f"{db.safe_url}\nnext: `fgvc server team add {comp_dir} NAME` for each team, then "
            f"`fgvc server run {comp_dir} --host 0.0.0.0`")


def add_team(comp_dir: Path, name: str, db_url: str | None) -> str:
    db = open_database(CompetitionCache(comp_dir), db_url)
    token = new_token()
    store.add_team(db, check_team_name(name), hash_token(token), utc_now())
    db.dispose()
    return (f"{token}\nthe token of team {name!r} (shown once, stored hashed): the team submits with "
            f"`fgvc submit FILE --url http://HOST:PORT/api/submissions --token TOKEN` or sets FGVC_TOKEN")


def new_team_token(comp_dir: Path, name: str, db_url: str | None) -> str:
    db = open_database(CompetitionCache(comp_dir), db_url)
    token = new_token()
    store.set_team_token(db, name, hash_token(token))
    db.dispose()
    return f"{token}\nthe new token of team {name!r}; its old token no longer works"


def list_teams(comp_dir: Path, db_url: str | None) -> str:
    db = open_database(CompetitionCache(comp_dir), db_url)
    teams = store.list_teams(db)
    db.dispose()
    if not teams:
        return "no teams yet; add one with `fgvc server team add COMP_DIR NAME`"
    width = max(len(t.name) for t, _ in teams)
    return "\n".join(f"{t.name:<{width}}  {n:>4} submission(s)  {'token' if t.has_token else 'no token (open mode)'}"
                     for t, n in teams)


def set_settings(comp_dir: Path, **changes) -> str:
    competition = update_settings(comp_dir, **changes)
    return f"updated {comp_dir}: {_describe(competition)}; a running server applies it to its next request"


def export(comp_dir: Path, *, fmt: str, out: Path | None, submissions: bool, db_url: str | None) -> str:
    """The leaderboard with private scores (or every submission) as CSV or JSON, to a file or stdout."""
    competitions = CompetitionCache(comp_dir)
    db = open_database(competitions, db_url)
    try:
        if submissions:
            text = _submissions_export(store.all_submissions(db), fmt)
        else:
            board = CompetitionService(competitions, db).leaderboard()
            text = board.to_csv(reveal_private=True) if fmt == "csv" else \
                json.dumps(board.to_dict(reveal_private=True), indent=1, ensure_ascii=False) + "\n"
    finally:
        db.dispose()
    if out is None:
        return text.rstrip("\n")
    atomic_write_text(out, text)
    os.chmod(out, 0o600)  # private scores
    return f"wrote {out}"


def _submissions_export(rows: list[tuple[str, store.SubmissionRow]], fmt: str) -> str:
    records = [{"submission_id": r.id, "team": team, "submitted_at": format_time(r.created_at), "status": r.status,
                "public_score": r.public_score, "private_score": r.private_score, "overall_score": r.overall_score,
                "labels_version": r.labels_version, "error": r.error} for team, r in rows]
    if fmt == "json":
        return json.dumps(records, indent=1, ensure_ascii=False) + "\n"
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]) if records else ["submission_id"], lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: ("" if v is None else ("'" + v if isinstance(v, str) and v[:1] in "=+-@" else v))
                         for k, v in record.items()})
    return out.getvalue()


def rescore(comp_dir: Path, *, labels: Path | None, db_url: str | None) -> str:
    """Install fixed labels (if given), then score every stored submission again from its stored body."""
    competitions = CompetitionCache(comp_dir)
    db = open_database(competitions, db_url)  # the right database before anything is changed
    installed = ""
    try:
        if labels is not None:
            competition = replace_labels(comp_dir, labels)
            installed = f"installed the labels of {labels} ({competition.labels_version[:12]}); "
        summary = CompetitionService(competitions, db).rescore(everything=True)
    finally:
        db.dispose()
    return (f"{installed}rescored {summary.rescored} submission(s): {summary.changed} score(s) changed, "
            f"{summary.invalid} no longer valid")
